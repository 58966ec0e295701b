//! Tests of the consumer window, including a property test over arbitrary interleavings.

use super::*;
use proptest::prelude::*;

fn cfg() -> WindowConfig {
    WindowConfig {
        ack_wait_ms: 1000,
        max_deliver: 3,
        max_inflight: 4,
        backoff_ms: vec![100, 500],
    }
}

const A: Holder = Holder::Member(1);
const B: Holder = Holder::Member(2);

fn offsets(t: &Taken) -> Vec<u64> {
    t.deliveries.iter().map(|d| d.offset).collect()
}

#[test]
fn delivers_new_offsets_up_to_the_inflight_limit() {
    let mut w = Window::starting_after(0);
    let d = w.take(&cfg(), A, 0, 10, 100);
    assert_eq!(offsets(&d), vec![1, 2, 3, 4]);
    assert!(d.deliveries.iter().all(|d| d.attempt == 1));
    assert!(
        w.take(&cfg(), A, 0, 10, 100).deliveries.is_empty(),
        "window is full"
    );
    assert_eq!(w.ack(2), Ok(Acked::Done));
    assert_eq!(offsets(&w.take(&cfg(), B, 0, 10, 100)), vec![5]);
    assert_eq!(w.floor(), 0);
    w.ack(1).unwrap();
    assert_eq!(w.floor(), 2, "floor jumps over acks above it");
}

#[test]
fn counts_what_each_holder_has_in_flight() {
    let mut w = Window::starting_after(0);
    w.take(&cfg(), A, 0, 10, 2);
    w.take(&cfg(), B, 0, 10, 1);
    assert_eq!((w.held(A), w.held(B), w.held(Holder::Lease)), (2, 1, 0));
    w.ack(1).unwrap();
    assert_eq!(w.held(A), 1);
    w.release(&cfg(), A);
    assert_eq!((w.held(A), w.held(B)), (0, 1));
    w.expire(&cfg(), 1000);
    assert_eq!(w.held(B), 0, "an expired delivery is no longer held");
    // A redelivery to another holder is counted there.
    w.take(&cfg(), A, 2000, 10, 3);
    assert_eq!(w.held(A), 3);
    w.trim(4);
    assert_eq!(w.held(A), 1, "trimmed offsets are no longer held");
}

#[test]
fn expired_messages_come_back_with_backoff_and_a_higher_attempt() {
    let c = cfg();
    let mut w = Window::starting_after(0);
    w.take(&c, A, 0, 1, 10);
    assert!(w.expire(&c, 999).is_empty());
    assert!(
        w.take(&c, A, 999, 1, 10).deliveries.is_empty(),
        "still in flight"
    );
    assert!(w.expire(&c, 1000).is_empty());
    assert!(
        w.take(&c, A, 1050, 1, 10).deliveries.is_empty(),
        "backoff of 100 ms"
    );
    let d = w.take(&c, A, 1100, 1, 10);
    assert_eq!(
        d.deliveries,
        vec![Delivery {
            offset: 1,
            attempt: 2
        }]
    );
    assert_eq!(w.stats().redelivered, 1);
}

#[test]
fn max_deliver_dead_letters_and_moves_on() {
    let c = cfg();
    let mut w = Window::starting_after(0);
    let mut now = 0;
    for attempt in 1..=3 {
        let d = w.take(&c, A, now, 2, 1);
        assert_eq!(d.deliveries, vec![Delivery { offset: 1, attempt }]);
        now += 1000;
        let dead = w.expire(&c, now);
        if attempt < 3 {
            assert!(dead.is_empty());
            now += 500;
        } else {
            assert_eq!(
                dead,
                vec![DeadLetter {
                    offset: 1,
                    attempts: 3
                }]
            );
        }
    }
    assert!(w.is_done(1));
    assert_eq!(w.floor(), 1);
    assert_eq!(w.stats().dead_lettered, 1);
    assert_eq!(offsets(&w.take(&c, A, now, 2, 1)), vec![2]);
}

#[test]
fn a_leaving_member_hands_its_messages_to_another_at_once() {
    let c = cfg();
    let mut w = Window::starting_after(0);
    w.take(&c, A, 0, 10, 2);
    w.take(&c, B, 0, 10, 2);
    assert!(w.release(&c, A).is_empty());
    assert_eq!(w.pending(), 4);
    let d = w.take(&c, B, 1, 2, 10);
    assert_eq!(offsets(&d), vec![1, 2]);
    assert!(d.deliveries.iter().all(|d| d.attempt == 2));
    assert_eq!(w.holder(1), Some(B));
}

#[test]
fn leases_are_not_released_by_a_departure() {
    let c = cfg();
    let mut w = Window::starting_after(0);
    w.take(&c, Holder::Lease, 0, 10, 2);
    assert!(w.release(&c, A).is_empty());
    assert_eq!(w.in_flight(), 2);
}

#[test]
fn bad_acks_are_refused_and_change_nothing() {
    let c = cfg();
    let mut w = Window::starting_after(0);
    w.take(&c, A, 0, 10, 2);
    let before = w.clone();
    assert_eq!(w.ack(7), Err(AckError::NotDelivered(7)));
    assert_eq!(w.ack_upto(3), Err(AckError::NotDelivered(3)));
    assert_eq!(w.nack(&c, 9, 0, 0), Err(AckError::NotInFlight(9)));
    assert_eq!(w, before);
    w.ack(1).unwrap();
    assert_eq!(w.ack(1), Ok(Acked::Already));
    assert_eq!(w.nack(&c, 1, 0, 0), Err(AckError::NotInFlight(1)));
}

#[test]
fn ack_upto_acks_everything_delivered_below() {
    let c = cfg();
    let mut w = Window::starting_after(0);
    w.take(&c, A, 0, 10, 4);
    w.ack(3).unwrap();
    assert_eq!(w.ack_upto(2), Ok(2));
    assert_eq!(w.floor(), 3);
    assert_eq!(w.pending(), 1);
}

#[test]
fn nack_redelivers_after_the_delay() {
    let c = cfg();
    let mut w = Window::starting_after(0);
    w.take(&c, A, 0, 1, 1);
    assert_eq!(w.nack(&c, 1, 200, 10), Ok(None));
    assert!(w.take(&c, A, 100, 1, 1).deliveries.is_empty());
    assert_eq!(
        w.take(&c, A, 210, 1, 1).deliveries,
        vec![Delivery {
            offset: 1,
            attempt: 2
        }]
    );
}

#[test]
fn snapshot_round_trip_redelivers_what_was_pending() {
    let c = cfg();
    let mut w = Window::starting_after(0);
    w.take(&c, A, 0, 10, 4);
    w.ack(2).unwrap();
    let r = Window::restore(&w.snapshot());
    assert_eq!(r.floor(), 0);
    assert!(r.is_done(2));
    assert_eq!(r.pending(), 3);
    let mut r = r;
    let d = r.take(&c, B, 0, 4, 10);
    assert_eq!(offsets(&d), vec![1, 3, 4]);
    assert!(d.deliveries.iter().all(|d| d.attempt == 2));
}

#[test]
fn trimming_skips_what_retention_removed_and_counts_it() {
    let c = cfg();
    let mut w = Window::starting_after(0);
    w.take(&c, A, 0, 10, 2);
    w.ack(1).unwrap();
    w.trim(6);
    assert_eq!(w.floor(), 5);
    assert_eq!(w.stats().trimmed, 4, "2 was pending, 3..=5 never delivered");
    assert_eq!(offsets(&w.take(&c, A, 0, 10, 1)), vec![6]);
}

#[derive(Clone, Debug)]
enum Op {
    Take(u8, u8),
    Ack(u8),
    AckUpto(u8),
    Nack(u8, u16),
    Advance(u16),
    Leave(u8),
    Publish(u8),
    Restore,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3, 1u8..6).prop_map(|(h, n)| Op::Take(h, n)),
        (0u8..40).prop_map(Op::Ack),
        (0u8..40).prop_map(Op::AckUpto),
        (0u8..40, 0u16..2000).prop_map(|(o, d)| Op::Nack(o, d)),
        (0u16..3000).prop_map(Op::Advance),
        (0u8..3).prop_map(Op::Leave),
        (1u8..5).prop_map(Op::Publish),
        Just(Op::Restore),
    ]
}

fn holder(h: u8) -> Holder {
    if h == 0 {
        Holder::Lease
    } else {
        Holder::Member(u64::from(h))
    }
}

proptest! {
    /// Any interleaving of deliver/ack/nack/timeout/disconnect/restart keeps every offset
    /// the consumer reached in exactly one state: acked, pending or dead-lettered; the
    /// in-flight window is never exceeded; and an acked or dead offset never returns.
    #[test]
    fn every_message_is_acked_pending_or_dead(ops in proptest::collection::vec(op(), 1..120)) {
        let c = cfg();
        let mut w = Window::starting_after(0);
        let mut now = 0u64;
        let mut head = 0u64;
        let mut acked = std::collections::BTreeSet::new();
        let mut dead = std::collections::BTreeSet::new();
        for op in ops {
            match op {
                Op::Take(h, n) => {
                    let taken = w.take(&c, holder(h), now, head, n as usize);
                    dead.extend(taken.dead.iter().map(|d| d.offset));
                    for d in taken.deliveries {
                        prop_assert!(!acked.contains(&d.offset) && !dead.contains(&d.offset), "done offset {} delivered again", d.offset);
                        prop_assert!(d.attempt <= c.max_deliver);
                    }
                }
                Op::Ack(o) => {
                    let o = u64::from(o);
                    let was_pending = w.is_pending(o);
                    match w.ack(o) {
                        Ok(Acked::Done) => { prop_assert!(was_pending); acked.insert(o); }
                        Ok(Acked::Already) => prop_assert!(acked.contains(&o) || dead.contains(&o) || o == 0),
                        Err(_) => prop_assert!(o >= w.next()),
                    }
                }
                Op::AckUpto(o) => {
                    let o = u64::from(o);
                    if w.ack_upto(o).is_ok() {
                        for x in 1..=o { if !dead.contains(&x) { acked.insert(x); } }
                    }
                }
                Op::Nack(o, delay) => {
                    if let Ok(Some(d)) = w.nack(&c, u64::from(o), u64::from(delay), now) { dead.insert(d.offset); }
                }
                Op::Advance(ms) => {
                    now += u64::from(ms);
                    for d in w.expire(&c, now) { dead.insert(d.offset); }
                }
                Op::Leave(h) => dead.extend(w.release(&c, holder(h)).iter().map(|d| d.offset)),
                Op::Publish(n) => head += u64::from(n),
                Op::Restore => w = Window::restore(&w.snapshot()),
            }
            prop_assert!(w.in_flight() <= c.max_inflight);
            let held: usize = (0..3).map(|h| w.held(holder(h))).sum();
            prop_assert_eq!(held, w.in_flight(), "held per holder must add up to in flight");
            for o in 1..w.next() {
                let states = [w.is_done(o), w.is_pending(o)].iter().filter(|b| **b).count();
                prop_assert_eq!(states, 1, "offset {} is in {} states", o, states);
                prop_assert!(!(acked.contains(&o) && dead.contains(&o)));
                if acked.contains(&o) || dead.contains(&o) { prop_assert!(w.is_done(o)); }
            }
            prop_assert_eq!(w.stats().dead_lettered, dead.len() as u64);
        }
    }
}
