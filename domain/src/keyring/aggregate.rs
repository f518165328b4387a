//! The cqrs-es binding of the Keyring: it decides a [`PreparedCommand`], the second of the
//! two pure phases (see [`super::preparation`]).

use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;

use super::errors::KeyringError;
use super::events::KeyringEvent;
use super::preparation::{KeyringContext, PreparedCommand};
use super::state::Keyring;

impl Aggregate for Keyring {
    const TYPE: &'static str = "Keyring";
    type Command = PreparedCommand;
    type Event = KeyringEvent;
    type Error = KeyringError;
    type Services = Arc<dyn KeyringContext>;

    async fn handle(
        &mut self,
        command: Self::Command,
        context: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        // Decide everything before writing anything: the sink applies each event as it is
        // written, and a command must emit all of its events or none.
        let events = self.decide(command.command, command.prepared, context.as_ref())?;
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.apply_event(event);
    }
}
