//! The trials, one file per behaviour, and the one list of them all ([`__for_each_trial!`]).
//!
//! Each trial is an `async fn(&Fixture) -> anyhow::Result<()>` with a one-line doc comment;
//! the list repeats that line as the trial's [`Trial::doc`](crate::Trial::doc) (a unit test
//! checks they agree) and names the capability it needs.

pub(crate) mod dead_letters;
pub(crate) mod delivery;
pub(crate) mod encryption;
pub(crate) mod envelope;
pub(crate) mod failures;
pub(crate) mod groups;
pub(crate) mod lifecycle;
pub(crate) mod ordering;
pub(crate) mod publish;
pub(crate) mod replay;
pub(crate) mod requires;
pub(crate) mod retention;
pub(crate) mod sourcing;
pub(crate) mod stats_health;
pub(crate) mod supervision;
pub(crate) mod telemetry;
pub(crate) mod traces;

/// Calls `$callback! { $($args)*; module::function => requirement, "doc"; ... }` with every
/// trial of the suite, once each: the single list that [`TRIALS`](crate::TRIALS) and its
/// constants expand.
///
/// `requirement` names a function of `trials::requires`.
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_trial {
    ($($callback:ident)::+ $(; $($args:tt)*)?) => {
        $($callback)::+! {
            $($($args)*;)?
            envelope::fields_survive_delivery => always,
                "Every envelope field (ids, unicode, big numbers, floats, microseconds, extra fields) reaches a handler unchanged.";
            envelope::fields_survive_replay => replay_by_time,
                "Every envelope field comes back unchanged through replay.";
            envelope::minimal_event_survives => always,
                "An event with only the required fields arrives with its optional fields still empty.";
            publish::publish_returns_event_id => always,
                "`publish` returns the event's own id and the handler receives the event under it.";
            publish::batch_returns_ids_in_order => always,
                "`publish_batch` returns one id per event, in the order given, and every event is delivered.";
            publish::batch_of_mixed_types => always,
                "A batch mixing several types reaches the handlers of each type, each event exactly once.";
            publish::oversized_batch_event_rejected_alone => always,
                "A batch with one oversized event publishes the others and reports that one as `EventTooLarge`.";
            publish::batch_hands_back_what_it_did_not_take => always,
                "A batch published with `publish_batch_returning` hands back exactly the events it did not take, unchanged, with the reason: the oversized one, and every one after shutdown.";
            publish::oversized_publish_writes_nothing => always,
                "An oversized single publish fails with `EventTooLarge` and writes nothing.";
            delivery::fan_out_to_every_handler => always,
                "5,000 events from 50 concurrent publishers reach each of two handlers exactly once.";
            supervision::backlogs_of_several_types_bigger_than_a_batch => always,
                "A handler on three types, each with a backlog of several batches, handles every event once.";
            supervision::a_failed_loop_is_restarted_and_reported => always,
                "A consumer loop that panics is restarted: every event is still handled, and health says a loop failed.";
            delivery::topic_isolation => always,
                "A handler of type A gets no events of type B.";
            delivery::several_types_one_handler => always,
                "A handler subscribed to several types gets the events of each.";
            delivery::unsubscribed_handler_gets_nothing => always,
                "An unsubscribed handler gets nothing more, while another handler of the type goes on.";
            delivery::failing_handler_does_not_affect_others => always,
                "A handler that fails every event does not keep other handlers of the type from theirs.";
            groups::resubscribe_resumes_group_position => always,
                "A handler that resubscribes gets the events published while it was away, and nothing twice.";
            groups::subscriptions_of_one_handler_share_work => always,
                "Two subscriptions of one handler share its events: each is handled once across both.";
            groups::instances_of_one_handler_share_work => shared_groups,
                "Two bus instances (as two processes would have) running one handler share its events: both take part, and each event is handled once across both.";
            groups::start_from_earliest => always,
                "A new handler with `StartFrom::Earliest` gets the events published before it subscribed.";
            groups::start_from_latest => always,
                "A new handler with `StartFrom::Latest` gets only the events published after it subscribed.";
            groups::start_from_time => always,
                "A new handler with `StartFrom::Time(t)` gets the retained events at or after `t`, then new ones.";
            ordering::per_key_order => per_key_order,
                "With concurrency 16, events of each partition key reach the handler in publish order.";
            ordering::per_key_order_in_batches => per_key_order,
                "Events of 64 keys published in batches of 480, several of each key per batch, reach the handler in batch order per key.";
            ordering::concurrency_is_bounded => always,
                "At most `concurrency` handler calls run at once, and more than one does.";
            ordering::concurrency_defaults_to_config => always,
                "Without a concurrency in the spec, `EVENT_HANDLER_CONCURRENCY` bounds the handler calls at once.";
            ordering::retry_does_not_stall_other_keys => per_key_order,
                "A key waiting for a retry does not hold up other keys, even on one lane, and keeps its own order.";
            failures::transient_failure_retried_then_acked => always,
                "A transient failure is retried and then acknowledged: no dead letter, N+1 calls, no redelivery.";
            failures::panicking_handler_keeps_subscription => always,
                "A panicking handler does not stop its subscription: the panic is retried, later events are handled.";
            failures::on_error_gets_attempt_numbers => always,
                "`on_error` is called after each failed attempt with the attempt number and the error's kind.";
            dead_letters::permanent_failure_dead_lettered => always,
                "A permanent failure goes straight to the dead-letter queue with its provenance, after one attempt.";
            dead_letters::exhausted_retries_dead_lettered => always,
                "An event that fails on every attempt is dead-lettered after `max_retries + 1` attempts with its first and last errors.";
            dead_letters::redrive_reaches_only_that_handler => always,
                "Redrive hands dead letters back to their handler only, and removes them from the queue.";
            dead_letters::redrive_selected_ids_only => always,
                "Redrive by id hands back only the selected dead letters and leaves the rest queued.";
            dead_letters::purge_removes_dead_letters => always,
                "Purge deletes the selected dead letters, then all of them, and they are never delivered again.";
            dead_letters::unknown_handler_refused => always,
                "Dead-letter calls for a handler the bus has never seen fail with `UnknownHandler`.";
            encryption::encrypted_events_are_transparent => always,
                "With encryption on, a handler of two types with backlogs bigger than a batch gets every event once and unchanged, as do replay and a dead letter.";
            encryption::unknown_key_dead_lettered_then_redriven => shared_groups,
                "An event whose key a consumer lacks is dead-lettered as `undecryptable` with its routing fields readable, and handled unchanged after a redrive once the key is added.";
            replay::since_time_exact_and_ordered => replay_by_time,
                "Replay from T returns exactly the events at or after T, in timestamp order, and leaves live handlers alone.";
            replay::window_to_and_limit => replay_by_time,
                "Replay stops before `to` (exclusive) and returns at most `limit` events, the earliest ones.";
            replay::merges_types_by_timestamp => replay_by_time,
                "Replay of several types merges them by timestamp, also when each type was published separately.";
            replay::ties_ordered_by_id => replay_by_time,
                "Events with the same timestamp replay in id order, across types and whatever the publish order.";
            replay::replay_refused_when_disabled => replay_by_time,
                "Replay is refused with `Disabled` when `ENABLE_EVENT_REPLAY=false`.";
            replay::invalid_window_refused => replay_by_time,
                "A window that ends before it starts, or a zero limit, is refused with `InvalidArgument`.";
            replay::replay_into_handler => replay_by_time,
                "Replay into a handler feeds it the window in timestamp order, reports failures, and moves no group.";
            retention::expired_events_are_trimmed => retention,
                "With `EVENT_TTL_SECONDS=1`, events vanish from replay and stats after the TTL, and stats agree with replay.";
            retention::late_subscriber_skips_trimmed => retention,
                "A new group starting from the earliest event gets only what retention kept.";
            stats_health::stats_count_events_by_type => always,
                "Stats count retained events by type and describe each handler's group and subscriptions.";
            stats_health::stats_count_outcomes_per_handler => always,
                "Stats count processed, failed, retried and dead-lettered events per handler.";
            traces::traces_cross_buses => always,
                "One trace runs from the publishing request through each handling attempt (retries, a redrive), across two bus instances where the backend is shared, and on through the events handlers publish; replay links to it.";
            traces::traces_cross_buses_direct => always,
                "The same trace with `process` spans made with the OpenTelemetry API directly (`trace::set_process_tracer`).";
            telemetry::metrics_agree_with_history => always,
                "The bus's metrics count each type's publishes by outcome, and per handler the deliveries, acknowledgements, failures and dead letters of a workload of two types with backlogs bigger than a batch.";
            stats_health::healthy_with_live_consumers => always,
                "Health is healthy with live consumers, each reported alive and not stalled.";
            stats_health::stalled_consumer_degrades_health => always,
                "A consumer with lag and no progress for `EVENT_STALL_TIMEOUT_MS` makes health degraded, until it moves again.";
            stats_health::unhealthy_after_shutdown => always,
                "After shutdown, health reports the bus unhealthy and says why.";
            lifecycle::shutdown_waits_for_in_flight => always,
                "Shutdown waits for a handler already running, which finishes and is not delivered again.";
            lifecycle::concurrent_stops_all_wait_for_in_flight => always,
                "Shutdown and unsubscribe that run at the same time both wait for the handler already running.";
            lifecycle::shutdown_is_bounded_by_timeout => always,
                "Shutdown gives up on a handler that outlasts `EVENT_SHUTDOWN_TIMEOUT_MS`, and leaves its event unacknowledged.";
            lifecycle::closed_bus_refuses_work => always,
                "After shutdown, publish, batch publish and subscribe fail with `ShutDown`; shutting down again is harmless.";
            lifecycle::subscriptions_inactive_after_shutdown => always,
                "Subscriptions are active until the bus shuts down, and inactive after.";
            lifecycle::unsubscribe_waits_for_in_flight => always,
                "Unsubscribe waits for a handler already running; the finished event is not delivered again.";
            lifecycle::subscribe_rejects_bad_spec => always,
                "Subscribe refuses a spec with no types, a bad handler name or a concurrency out of range.";
            lifecycle::restart_keeps_events_and_positions => persistent,
                "A restarted bus keeps the events and each group's position: a handler resumes where it stopped.";
            sourcing::append_and_load_in_version_order => event_sourcing,
                "Appends are stamped with versions 1, 2, 3... and load returns them in version order.";
            sourcing::stale_version_refused => event_sourcing,
                "An append with a stale expected version fails with `VersionConflict` and writes nothing.";
            sourcing::concurrent_appends_one_wins => event_sourcing,
                "Of concurrent appends that all expect the same version, exactly one succeeds.";
            sourcing::oversized_append_writes_nothing => event_sourcing,
                "An append with one oversized event fails with `EventTooLarge` and writes none of its events.";
            sourcing::sourcing_refused_when_disabled => event_sourcing,
                "Append and load fail with `Disabled` when `ENABLE_EVENT_SOURCING=false`, and nothing is published.";
        }
    };
}
