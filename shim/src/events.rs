//! Publishing task events to containerd, in the order they were raised.
//!
//! One thread owns the connection to containerd; everything else queues. The queue is how
//! /tasks/start is guaranteed to precede /tasks/exit of the same process.

use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::publisher::RemotePublisher;

enum Item {
    Event(&'static str, Box<dyn MessageDyn>),
    Flush(Sender<()>),
}

/// An ordered event queue to containerd.
pub struct Events {
    tx: Mutex<Sender<Item>>,
}

impl Events {
    /// Starts the publishing thread on `publisher`, tagging events with `namespace`.
    pub fn start(publisher: RemotePublisher, namespace: String) -> Events {
        let (tx, rx) = channel::<Item>();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                for item in rx {
                    match item {
                        Item::Event(topic, ev) => {
                            if let Err(e) =
                                publisher.publish(Context::default(), topic, &namespace, ev)
                            {
                                tracing::warn!(topic, error = %e, "publish event");
                            }
                        }
                        Item::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .expect("spawn events thread");
        Events { tx: Mutex::new(tx) }
    }

    /// Queues an event.
    pub fn send(&self, topic: &'static str, event: impl MessageDyn) {
        let _ = self
            .tx
            .lock()
            .unwrap()
            .send(Item::Event(topic, Box::new(event)));
    }

    /// Waits until every queued event has been handed to containerd.
    pub fn flush(&self) {
        let (tx, rx) = channel();
        if self.tx.lock().unwrap().send(Item::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(5));
        }
    }
}
