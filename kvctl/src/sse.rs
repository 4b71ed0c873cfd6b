//! Server-Sent Events, split out of a byte stream (the generated client
//! hands a watch back as the open body).

/// One event: its `id` (absent on snapshot events), name and data.
#[derive(Debug, Default)]
pub struct Event {
    pub id: Option<String>,
    pub name: String,
    pub data: String,
}

/// Collects bytes and gives back each event once its blank line arrives.
#[derive(Default)]
pub struct Parser {
    buffer: Vec<u8>,
    event: Event,
}

impl Parser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                let event = std::mem::take(&mut self.event);
                if !event.name.is_empty() || !event.data.is_empty() {
                    events.push(event);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.event.id = Some(value.to_owned()),
                "event" => self.event.name = value.to_owned(),
                "data" => {
                    if !self.event.data.is_empty() {
                        self.event.data.push('\n');
                    }
                    self.event.data.push_str(value);
                }
                _ => {}
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::Parser;

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let stream = b": heartbeat\nevent: snapshot\ndata: {\"key\":\"a\"}\n\nid: 5\r\nevent: sync\ndata: {}\n\n";
        for cut in 0..stream.len() {
            let mut parser = Parser::default();
            let mut events = parser.push(&stream[..cut]);
            events.extend(parser.push(&stream[cut..]));
            let seen: Vec<_> = events
                .iter()
                .map(|event| {
                    (
                        event.id.as_deref(),
                        event.name.as_str(),
                        event.data.as_str(),
                    )
                })
                .collect();
            assert_eq!(
                seen,
                [
                    (None, "snapshot", "{\"key\":\"a\"}"),
                    (Some("5"), "sync", "{}")
                ],
                "cut at {cut}"
            );
        }
    }
}
