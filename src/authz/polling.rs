//! The receiving end of a queue fed from request threads, for a worker thread of
//! its own (the shadow worker, the decision log's writer).
//!
//! A receiver blocked in `recv` is asleep on a futex, and every `try_send` that finds
//! it asleep wakes it: a system call and a context switch paid on the request's
//! thread, for nearly every item when the worker keeps up. [`PollingReceiver`] polls
//! instead while there is traffic: an empty queue is looked at again after a pause
//! of `min`, then `2·min`, `4·min`, … while the pause is below `max`, so a sender
//! finds no sleeping receiver to wake, and items arrive in batches. Once the next
//! pause would reach `max` the queue has stayed empty long enough to mean no
//! traffic: the receiver then blocks until the next item, so an idle service never
//! wakes the worker. The longest pause is thus the last doubling of `min` below
//! `max`; a bounded queue must hold what arrives during it, or items are dropped by
//! the senders.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

/// A queue's receiver that polls under traffic and blocks once idle (see the module
/// documentation).
#[derive(Debug)]
pub struct PollingReceiver<T> {
    rx: Receiver<T>,
    min: Duration,
    max: Duration,
    pause: Duration,
}

impl<T> PollingReceiver<T> {
    /// Poll `rx` with pauses from `min` doubling while below `max` (see the module
    /// documentation).
    pub fn new(rx: Receiver<T>, min: Duration, max: Duration) -> Self {
        Self {
            rx,
            min,
            max: max.max(min),
            pause: min,
        }
    }

    /// The next item, waiting for it as described above; `None` once every sender
    /// is gone and the queue is empty.
    pub fn recv(&mut self) -> Option<T> {
        loop {
            match self.rx.try_recv() {
                Ok(item) => {
                    self.pause = self.min;
                    return Some(item);
                }
                Err(TryRecvError::Empty) if self.pause < self.max => {
                    std::thread::sleep(self.pause);
                    self.pause = (self.pause * 2).min(self.max);
                }
                Err(TryRecvError::Empty) => {
                    let item = self.rx.recv().ok()?;
                    self.pause = self.min;
                    return Some(item);
                }
                Err(TryRecvError::Disconnected) => return None,
            }
        }
    }

    /// An item already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        let item = self.rx.try_recv().ok()?;
        self.pause = self.min;
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_in_order_and_the_end_is_seen() {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let mut rx = PollingReceiver::new(rx, Duration::from_micros(50), Duration::from_millis(1));
        let sender = std::thread::spawn(move || {
            for i in 0..100 {
                // Bursts with pauses: some items find the receiver polling, some blocked.
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(3));
                }
                tx.send(i).expect("receiver alive");
            }
        });
        let got: Vec<i32> = std::iter::from_fn(|| rx.recv()).collect();
        sender.join().expect("sender");
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn an_idle_receiver_blocks_until_the_next_item() {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let mut rx = PollingReceiver::new(rx, Duration::from_micros(10), Duration::from_micros(40));
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            tx.send(7).expect("receiver alive");
        });
        assert_eq!(rx.recv(), Some(7));
        sender.join().expect("sender");
        assert_eq!(rx.recv(), None);
    }
}
