use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

fn place(flow: u64, class: Priority, weight: u32) -> Place {
    Place {
        flow,
        class,
        weight,
        cost: 100,
        ..Place::default()
    }
}

#[tokio::test(start_paused = true)]
async fn slots_queue_time_out_and_come_back() {
    let limit = Arc::new(CallLimit::new(2, 1, Duration::from_millis(100)));
    let p = Place::default();
    let a = limit.acquire(&p).await.unwrap();
    let _b = limit.acquire(&p).await.unwrap();
    assert_eq!(limit.in_flight(), 2);
    // One may wait; it times out.
    assert!(matches!(
        limit.acquire(&p).await,
        Err(Overloaded::TimedOut { .. })
    ));
    // A waiting call gets the slot a finished one gives up.
    let waiter = tokio::spawn({
        let limit = limit.clone();
        async move { limit.acquire(&Place::default()).await.is_ok() }
    });
    tokio::task::yield_now().await;
    drop(a);
    assert!(waiter.await.unwrap());
    assert_eq!(
        limit.in_flight(),
        1,
        "the waiter's slot was dropped with it"
    );
    assert_eq!(limit.refused(), 1);
}

#[tokio::test]
async fn a_caller_that_leaves_the_queue_gives_up_its_place() {
    let limit = Arc::new(CallLimit::new(1, 1, Duration::from_secs(60)));
    let _held = limit.acquire(&Place::default()).await.unwrap();
    let waiter = {
        let limit = limit.clone();
        tokio::spawn(async move { limit.acquire(&Place::default()).await.map(|_| ()) })
    };
    while limit.waiting() == 0 {
        tokio::task::yield_now().await;
    }
    // The client went away while queued.
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(limit.waiting(), 0, "the place was given up");
    // So the next call may wait in the queue, not refused as if it were full.
    let next = {
        let limit = limit.clone();
        tokio::spawn(async move { limit.acquire(&Place::default()).await.map(|_| ()) })
    };
    while limit.waiting() == 0 && !next.is_finished() {
        tokio::task::yield_now().await;
    }
    assert!(!next.is_finished(), "queued, not refused");
    next.abort();
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let limit = Arc::new(CallLimit::new(1, 0, Duration::from_secs(60)));
    let _held = limit.acquire(&Place::default()).await.unwrap();
    assert!(matches!(
        limit.acquire(&Place::default()).await,
        Err(Overloaded::Full { .. })
    ));
    let unlimited = Arc::new(CallLimit::new(0, 0, Duration::ZERO));
    assert!(unlimited
        .acquire(&Place::default())
        .await
        .unwrap()
        .is_none());
}

/// Queues `n` calls of each place (in turn) behind one held slot, then
/// frees slots one at a time: the order the flows were served in.
async fn served_order(places: &[Place], n: usize) -> Vec<u64> {
    let limit = Arc::new(CallLimit::new(1, 10_000, Duration::from_secs(3600)));
    let held = limit.acquire(&Place::default()).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for _ in 0..n {
        for p in places {
            let (shared, tx, p) = (limit.clone(), tx.clone(), *p);
            tasks.push(tokio::spawn(async move {
                let slot = shared.acquire(&p).await.unwrap();
                tx.send((p.flow, slot)).unwrap();
            }));
            // Queued in this order.
            while limit.waiting() < tasks.len() {
                tokio::task::yield_now().await;
            }
        }
    }
    drop(held);
    let mut order = Vec::new();
    for _ in 0..tasks.len() {
        let (flow, slot) = rx.recv().await.unwrap();
        order.push(flow);
        drop(slot);
    }
    order
}

#[tokio::test]
async fn flows_share_slots_by_weight_whatever_they_queue() {
    // Flow 1 (weight 3) and flow 2 (weight 1) each flood the queue.
    let order = served_order(
        &[
            place(1, Priority::Standard, 3),
            place(2, Priority::Standard, 1),
        ],
        40,
    )
    .await;
    // While both wait, three of flow 1 for each of flow 2.
    let first = &order[..40];
    let ones = first.iter().filter(|&&f| f == 1).count();
    assert_eq!(ones, 30, "{first:?}");
}

#[tokio::test]
async fn a_higher_class_goes_first_and_costs_count() {
    let order = served_order(
        &[
            place(1, Priority::Batch, 1000),
            place(2, Priority::Interactive, 1),
            place(3, Priority::Standard, 1),
        ],
        3,
    )
    .await;
    assert_eq!(order, [2, 2, 2, 3, 3, 3, 1, 1, 1]);
    // Equal weights, one flow's calls 4 times as costly: 4 of the cheap
    // flow's calls for each of the costly one's.
    let cheap = place(1, Priority::Standard, 1);
    let costly = Place {
        cost: 400,
        ..place(2, Priority::Standard, 1)
    };
    let order = served_order(&[cheap, costly], 20).await;
    let cheap_served = order[..10].iter().filter(|&&f| f == 1).count();
    assert_eq!(cheap_served, 8, "{order:?}");
}

#[tokio::test]
async fn a_flow_waits_only_as_many_calls_as_it_may() {
    let limit = Arc::new(CallLimit::new(1, 100, Duration::from_secs(60)));
    let _held = limit.acquire(&Place::default()).await.unwrap();
    let bounded = Place {
        flow: 7,
        max_queued: 1,
        ..Place::default()
    };
    let first = tokio::spawn({
        let limit = limit.clone();
        async move { limit.acquire(&bounded).await.map(|_| ()) }
    });
    while limit.waiting() == 0 {
        tokio::task::yield_now().await;
    }
    assert!(matches!(
        limit.acquire(&bounded).await,
        Err(Overloaded::FlowFull { queued: 1, .. })
    ));
    // Another flow still may.
    let other = tokio::spawn({
        let limit = limit.clone();
        async move { limit.acquire(&Place::default()).await.map(|_| ()) }
    });
    while limit.waiting() < 2 {
        tokio::task::yield_now().await;
    }
    first.abort();
    other.abort();
}

#[tokio::test(start_paused = true)]
async fn a_deadline_that_passes_in_the_queue_refuses_the_call() {
    let limit = Arc::new(CallLimit::new(1, 10, Duration::from_secs(60)));
    let _held = limit.acquire(&Place::default()).await.unwrap();
    let soon = Place {
        deadline: Some(Instant::now() + Duration::from_millis(50)),
        ..Place::default()
    };
    let refused = limit.acquire(&soon).await.unwrap_err();
    assert!(
        matches!(refused, Overloaded::DeadlinePassed { .. }),
        "{refused}"
    );
    assert_eq!(limit.waiting(), 0);
}

#[tokio::test]
async fn no_slot_is_lost_when_callers_come_and_go() {
    let limit = Arc::new(CallLimit::new(4, 1_000, Duration::from_secs(60)));
    let mut tasks = Vec::new();
    for i in 0..400u64 {
        let limit = limit.clone();
        tasks.push(tokio::spawn(async move {
            let p = Place {
                flow: i % 5,
                weight: 1 + (i % 3) as u32,
                ..Place::default()
            };
            let _slot = limit.acquire(&p).await.unwrap();
            tokio::task::yield_now().await;
        }));
        if i % 3 == 0 {
            // Some leave while queued, some after they got a slot.
            tasks[i as usize / 2].abort();
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    assert_eq!((limit.in_flight(), limit.waiting()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_handed_over_as_waits_time_out_are_neither_lost_nor_doubled() {
    // Waits of a millisecond end while slots are being handed over, on two
    // threads: every slot comes back once, whichever side wins each race.
    let limit = Arc::new(CallLimit::new(2, 1_000, Duration::from_millis(1)));
    let mut tasks = Vec::new();
    for i in 0..2_000u64 {
        let limit = limit.clone();
        tasks.push(tokio::spawn(async move {
            let place = Place {
                flow: i % 3,
                ..Place::default()
            };
            if let Ok(slot) = limit.acquire(&place).await {
                if i % 2 == 0 {
                    tokio::task::yield_now().await;
                }
                drop(slot);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!((limit.in_flight(), limit.waiting()), (0, 0));
    // And the limit still admits its two.
    let a = limit.acquire(&Place::default()).await.unwrap();
    let b = limit.acquire(&Place::default()).await.unwrap();
    assert!(a.is_some() && b.is_some());
}

#[tokio::test(start_paused = true)]
async fn callers_that_come_back_after_each_call_share_by_weight() {
    // Six callers a flow, each calling again as soon as its call ends (a
    // closed loop, as clients do): one slot, each call 10 ms.
    let limit = Arc::new(CallLimit::new(1, 1_000, Duration::from_secs(3600)));
    let served = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut callers = Vec::new();
    for (i, weight) in [(0usize, 3u32), (1, 1)] {
        for _ in 0..6 {
            let (limit, served) = (limit.clone(), served.clone());
            callers.push(tokio::spawn(async move {
                loop {
                    let place = place(i as u64 + 1, Priority::Standard, weight);
                    let _slot = limit.acquire(&place).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    served[i].fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    for c in &callers {
        c.abort();
    }
    let (a, b) = (
        served[0].load(Ordering::Relaxed),
        served[1].load(Ordering::Relaxed),
    );
    assert!((a as f64 / b as f64 - 3.0).abs() < 0.3, "{a}:{b}");
}

#[tokio::test(start_paused = true)]
async fn a_class_served_first_leaves_the_weights_of_the_next_whole() {
    // As above, with an interactive caller too, calling again 15 ms after
    // each of its calls: it goes first each time, and the standard flows
    // still share 3:1. (With one virtual clock for all classes, each
    // interactive call moved it past both standard flows' finishes, and
    // those then alternated.)
    let limit = Arc::new(CallLimit::new(1, 1_000, Duration::from_secs(3600)));
    let served = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let mut callers = Vec::new();
    for (i, weight, class, count) in [
        (0usize, 3u32, Priority::Standard, 6),
        (1, 1, Priority::Standard, 6),
        (2, 1, Priority::Interactive, 1),
    ] {
        for _ in 0..count {
            let (limit, served) = (limit.clone(), served.clone());
            callers.push(tokio::spawn(async move {
                loop {
                    let place = place(i as u64 + 1, class, weight);
                    let slot = limit.acquire(&place).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    drop(slot);
                    served[i].fetch_add(1, Ordering::Relaxed);
                    if class == Priority::Interactive {
                        tokio::time::sleep(Duration::from_millis(15)).await;
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    for c in &callers {
        c.abort();
    }
    let [a, b, c] = [0, 1, 2].map(|i| served[i].load(Ordering::Relaxed));
    assert!(c > 100, "the interactive caller went first: {c}");
    assert!((a as f64 / b as f64 - 3.0).abs() < 0.3, "{a}:{b}");
}
