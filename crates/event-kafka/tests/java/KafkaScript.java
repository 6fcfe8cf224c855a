import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.*;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * What another Kafka application writes into the bus's topics, for the tests in tests/: runs
 * the commands read from stdin, one a line, fields separated by tabs, with the Java client.
 *
 * <pre>
 * CONFIG    topic name value   set a topic config ("-" as value deletes it, back to the default)
 * PRODUCER  transactional-id   start the producer ("-": idempotent, not transactional)
 * BEGIN | COMMIT | ABORT       transactions of a transactional producer
 * SEND      topic partition key value [timestamp [header=value ...]]
 *           key, value and header values: "-" for null, "hex:..." for bytes, else UTF-8 text;
 *           timestamp: milliseconds, or "-" for the producer's clock
 * FLUSH                        wait until everything sent is acknowledged (COMMIT does too)
 * </pre>
 *
 * Prints "done" when every command succeeded; any failure ends it with a stack trace.
 */
public class KafkaScript {
    static byte[] bytes(String field) {
        if (field.equals("-")) return null;
        if (field.startsWith("hex:")) return HexFormat.of().parseHex(field.substring(4));
        return field.getBytes(StandardCharsets.UTF_8);
    }

    public static void main(String[] args) throws Exception {
        String brokers = args[0];
        KafkaProducer<byte[], byte[]> producer = null;
        // Sends not yet checked: COMMIT and FLUSH wait for them and fail on a refused record.
        List<java.util.concurrent.Future<org.apache.kafka.clients.producer.RecordMetadata>> pending = new ArrayList<>();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        try (Admin admin = Admin.create(Map.of("bootstrap.servers", brokers))) {
            String line;
            while ((line = in.readLine()) != null) {
                if (line.isBlank()) continue;
                String[] f = line.split("\t", -1);
                switch (f[0]) {
                    case "CONFIG" -> {
                        ConfigResource topic = new ConfigResource(ConfigResource.Type.TOPIC, f[1]);
                        AlterConfigOp op = f[3].equals("-")
                            ? new AlterConfigOp(new ConfigEntry(f[2], null), AlterConfigOp.OpType.DELETE)
                            : new AlterConfigOp(new ConfigEntry(f[2], f[3]), AlterConfigOp.OpType.SET);
                        admin.incrementalAlterConfigs(Map.of(topic, List.of(op))).all().get();
                    }
                    case "PRODUCER" -> {
                        Map<String, Object> config = new HashMap<>();
                        config.put("bootstrap.servers", brokers);
                        config.put("key.serializer", ByteArraySerializer.class.getName());
                        config.put("value.serializer", ByteArraySerializer.class.getName());
                        config.put("enable.idempotence", "true");
                        config.put("linger.ms", "5");
                        if (!f[1].equals("-")) config.put("transactional.id", f[1]);
                        producer = new KafkaProducer<>(config);
                        if (!f[1].equals("-")) producer.initTransactions();
                    }
                    case "BEGIN" -> producer.beginTransaction();
                    case "COMMIT" -> {
                        producer.commitTransaction();
                        for (var sent : pending) sent.get();
                        pending.clear();
                    }
                    case "ABORT" -> {
                        producer.abortTransaction();
                        pending.clear();
                    }
                    case "FLUSH" -> {
                        producer.flush();
                        for (var sent : pending) sent.get();
                        pending.clear();
                    }
                    case "SEND" -> {
                        Long timestamp = f.length > 5 && !f[5].equals("-") ? Long.parseLong(f[5]) : null;
                        List<org.apache.kafka.common.header.Header> headers = new ArrayList<>();
                        for (int i = 6; i < f.length; i++) {
                            int eq = f[i].indexOf('=');
                            headers.add(new RecordHeader(f[i].substring(0, eq), bytes(f[i].substring(eq + 1))));
                        }
                        pending.add(producer.send(new ProducerRecord<>(f[1], Integer.parseInt(f[2]), timestamp,
                            bytes(f[3]), bytes(f[4]), headers)));
                    }
                    default -> throw new IllegalArgumentException("unknown command: " + line);
                }
            }
        } finally {
            if (producer != null) producer.close();
        }
        System.out.println("done");
    }
}
