//! How a writer lane's answers reach the threads that asked: one wake-up per thread per batch
//! instead of one per request.
//!
//! A request waits for its lane on a oneshot channel. Completing one from the writer thread
//! wakes the requester's task on its gRPC thread, and every such cross-thread wake-up is an
//! `eventfd` write (tokio's current-thread runtime wakes its driver on each). A batch of a
//! dozen one-event requests cost the writer a dozen of those, and their replies trickled out,
//! each written to the socket on its own. A gRPC thread that installs a [`Mailbox`] instead
//! gets its answers in bulk: the lane drops them all in the mailbox and wakes the thread once;
//! there one task completes them, all the requesters run, and h2 writes their replies
//! together. Threads without a mailbox (HTTP, tests calling the domain directly) are answered
//! directly, as before.

use super::model::Event;
use super::writer::WriteError;
use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, oneshot};

/// Where a request's answer goes.
pub(super) type Reply = oneshot::Sender<Result<Vec<Event>, WriteError>>;
type Answer = (Reply, Result<Vec<Event>, WriteError>);

/// Answers waiting to be handed to the requesters of one thread.
#[derive(Default)]
pub struct Mailbox {
    answers: Mutex<Vec<Answer>>,
    ready: Notify,
}

thread_local! {
    static HOME: RefCell<Option<Arc<Mailbox>>> = const { RefCell::new(None) };
}

/// Gives the current thread a mailbox and starts the task that empties it. Call it from inside
/// the thread's current-thread runtime (a gRPC server thread); the task ends with the runtime.
pub fn install_mailbox() {
    let mailbox = Arc::new(Mailbox::default());
    HOME.with(|h| *h.borrow_mut() = Some(mailbox.clone()));
    tokio::spawn(async move {
        loop {
            mailbox.ready.notified().await;
            let answers = std::mem::take(&mut *lock(&mailbox.answers));
            // Local wake-ups: the requesters all become runnable before any of them runs.
            for (reply, answer) in answers {
                // The requester may have gone away (client cancelled); nothing to do then.
                let _ = reply.send(answer);
            }
        }
    });
}

/// The current thread's mailbox, if it has one.
pub(super) fn home() -> Option<Arc<Mailbox>> {
    HOME.with(|h| h.borrow().clone())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Events a mailbox's gathered answers may hold before they are delivered without waiting
/// for the rest of the round: large answers (100-event requests) take long enough to build
/// that their requesters should start encoding while the lane builds the next ones.
const DELIVER_EARLY_EVENTS: usize = 256;

/// A lane's answers being gathered, per mailbox, until [`Outbox::deliver`].
#[derive(Default)]
pub(super) struct Outbox(Vec<(Arc<Mailbox>, Vec<Answer>, usize)>);

impl Outbox {
    /// Queues an answer for `home`'s thread, or answers at once without a mailbox.
    pub(super) fn answer(
        &mut self,
        home: Option<&Arc<Mailbox>>,
        reply: Reply,
        answer: Result<Vec<Event>, WriteError>,
    ) {
        let Some(home) = home else {
            let _ = reply.send(answer);
            return;
        };
        let events = answer.as_ref().map_or(0, Vec::len);
        // A handful of threads at most: a linear search is the cheapest lookup.
        let i = match self.0.iter().position(|(m, _, _)| Arc::ptr_eq(m, home)) {
            Some(i) => i,
            None => {
                self.0.push((home.clone(), Vec::new(), 0));
                self.0.len() - 1
            }
        };
        let (mailbox, answers, held) = &mut self.0[i];
        answers.push((reply, answer));
        *held += events;
        if *held >= DELIVER_EARLY_EVENTS {
            hand_over(mailbox, std::mem::take(answers));
            *held = 0;
        }
    }

    /// Hands every answer still gathered over: one lock and one wake-up per mailbox.
    pub(super) fn deliver(&mut self) {
        for (mailbox, answers, _) in self.0.drain(..) {
            if !answers.is_empty() {
                hand_over(&mailbox, answers);
            }
        }
    }
}

fn hand_over(mailbox: &Mailbox, answers: Vec<Answer>) {
    lock(&mailbox.answers).extend(answers);
    mailbox.ready.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_reach_the_thread_that_asked_in_one_delivery() {
        let (home_tx, home_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                install_mailbox();
                let (a, ra): (Reply, _) = oneshot::channel();
                let (b, rb): (Reply, _) = oneshot::channel();
                home_tx
                    .send((home().expect("installed"), a, b))
                    .expect("send");
                let (ra, rb) = (ra.await.expect("a"), rb.await.expect("b"));
                done_tx
                    .send((ra.expect("ok").len(), rb.is_err()))
                    .expect("done");
            });
        });
        let (mailbox, a, b) = home_rx.recv().expect("the thread's mailbox");
        // This thread has none: its own answers would go directly.
        assert!(home().is_none());
        let mut out = Outbox::default();
        out.answer(Some(&mailbox), a, Ok(Vec::new()));
        let gone = WriteError::Failed(crate::error::Error::Unavailable("x".into()));
        out.answer(Some(&mailbox), b, Err(gone));
        assert_eq!(out.0.len(), 1, "both answers in one mailbox entry");
        out.deliver();
        assert_eq!(done_rx.recv().expect("answered"), (0, true));
        thread.join().expect("thread");
    }

    #[test]
    fn without_a_mailbox_the_answer_goes_at_once() {
        let (tx, mut rx) = oneshot::channel();
        Outbox::default().answer(None, tx, Ok(Vec::new()));
        assert!(rx.try_recv().expect("answered").is_ok());
    }

    #[test]
    fn large_answers_go_without_waiting_for_the_round() {
        let event = Event::from_valid(super::super::model::tick(), "t", "", 1);
        let mailbox = Arc::new(Mailbox::default());
        let mut out = Outbox::default();
        let (small, _rs) = oneshot::channel();
        out.answer(Some(&mailbox), small, Ok(vec![event.clone()]));
        assert!(
            lock(&mailbox.answers).is_empty(),
            "a small answer waits for the round"
        );
        let (large, _rl) = oneshot::channel();
        out.answer(Some(&mailbox), large, Ok(vec![event; DELIVER_EARLY_EVENTS]));
        assert_eq!(lock(&mailbox.answers).len(), 2, "both handed over at once");
        out.deliver();
        assert_eq!(
            lock(&mailbox.answers).len(),
            2,
            "nothing left to deliver twice"
        );
    }
}
