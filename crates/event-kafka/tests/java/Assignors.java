import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.util.*;
import org.apache.kafka.clients.consumer.ConsumerPartitionAssignor.Assignment;
import org.apache.kafka.clients.consumer.ConsumerPartitionAssignor.Subscription;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.consumer.RoundRobinAssignor;
import org.apache.kafka.clients.consumer.internals.ConsumerProtocol;
import org.apache.kafka.common.TopicPartition;

/**
 * The Java client's RangeAssignor, RoundRobinAssignor and ConsumerProtocol for
 * tests/membership.rs: reads requests from stdin, one a line, and answers each with one line.
 */
public class Assignors {
    static String canonical(List<TopicPartition> partitions) {
        TreeMap<String, TreeSet<Integer>> byTopic = new TreeMap<>();
        for (TopicPartition tp : partitions) byTopic.computeIfAbsent(tp.topic(), t -> new TreeSet<>()).add(tp.partition());
        StringJoiner out = new StringJoiner(";");
        byTopic.forEach((t, ps) -> {
            StringJoiner p = new StringJoiner(",");
            ps.forEach(i -> p.add(Integer.toString(i)));
            out.add(t + ":" + p);
        });
        return out.toString();
    }

    static List<TopicPartition> parse(String canonical) {
        List<TopicPartition> list = new ArrayList<>();
        if (canonical.equals("-")) return list;
        for (String topic : canonical.split(";")) {
            String[] parts = topic.split(":");
            for (String p : parts[1].split(",")) list.add(new TopicPartition(parts[0], Integer.parseInt(p)));
        }
        return list;
    }

    static ByteBuffer hex(String hex) {
        byte[] bytes = HexFormat.of().parseHex(hex);
        return ByteBuffer.wrap(bytes);
    }

    static String hex(ByteBuffer buffer) {
        byte[] bytes = new byte[buffer.remaining()];
        buffer.get(bytes);
        return HexFormat.of().formatHex(bytes);
    }

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        String line;
        while ((line = in.readLine()) != null) {
            String[] fields = line.split(" ");
            switch (fields[0]) {
                case "case" -> {
                    Map<String, Integer> counts = new HashMap<>();
                    for (String t : fields[1].split(",")) {
                        String[] kv = t.split(":");
                        counts.put(kv[0], Integer.parseInt(kv[1]));
                    }
                    Map<String, Subscription> subscriptions = new HashMap<>();
                    List<String> order = new ArrayList<>();
                    for (int i = 2; i < fields.length; i++) {
                        String[] m = fields[i].split("/");
                        Subscription s = new Subscription(Arrays.asList(m[2].split(",")));
                        s.setGroupInstanceId(m[1].equals("-") ? Optional.empty() : Optional.of(m[1]));
                        subscriptions.put(m[0], s);
                        order.add(m[0]);
                    }
                    Map<String, List<TopicPartition>> range = new RangeAssignor().assign(counts, subscriptions);
                    Map<String, List<TopicPartition>> rr = new RoundRobinAssignor().assign(counts, subscriptions);
                    StringJoiner out = new StringJoiner(" ");
                    for (String m : order) out.add(m + "=" + canonical(range.get(m)));
                    out.add("|");
                    for (String m : order) out.add(m + "=" + canonical(rr.get(m)));
                    System.out.println(out);
                }
                // Our bytes, read by Java.
                case "sub" -> {
                    Subscription s = ConsumerProtocol.deserializeSubscription(hex(fields[1]));
                    String user = s.userData() == null ? "-" : hex(s.userData());
                    System.out.println(String.join(",", s.topics()) + " " + user + " " + canonical(s.ownedPartitions())
                        + " " + s.generationId().orElse(-1) + " " + s.rackId().orElse("-"));
                }
                case "asg" -> {
                    Assignment a = ConsumerProtocol.deserializeAssignment(hex(fields[1]));
                    String user = a.userData() == null ? "-" : hex(a.userData());
                    System.out.println(canonical(a.partitions()) + " " + user);
                }
                // Java's bytes, for us to read.
                case "jsub" -> {
                    Subscription s = new Subscription(Arrays.asList(fields[1].split(",")), hex(fields[2]),
                        parse(fields[3]), Integer.parseInt(fields[4]), Optional.of(fields[5]));
                    System.out.println(hex(ConsumerProtocol.serializeSubscription(s)));
                }
                case "jasg" -> {
                    Assignment a = new Assignment(parse(fields[1]), hex(fields[2]));
                    System.out.println(hex(ConsumerProtocol.serializeAssignment(a)));
                }
                default -> throw new IllegalArgumentException(line);
            }
        }
    }
}
