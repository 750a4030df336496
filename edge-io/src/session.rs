//! What makes one broker session distinguishable from the last: the session epoch, a
//! counter persisted in a file of its own that only ever grows (across restarts too,
//! whatever the clock says), and the presence payload (`online`, epoch, version) that is
//! both the retained presence message and, with `online: false`, the Last Will. A reader
//! drops a presence whose epoch is below the highest it has seen, so a late Will of an old
//! session cannot mark a live client offline.
//!
//! When the epoch advances is each binary's choice: the LO takes a new one for every
//! connection attempt, persisted before the CONNECT that carries it ([`EpochCounter`]); the
//! agent takes one per established session, persisted at CONNACK ([`EpochFile`]).

use crate::fs::{write_atomic, WriteError};
use schemas::bounds::MAX_EPOCH;
use schemas::wire::{Presence, PresenceSchema};
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Most bytes read from an epoch file (a `u64` and a newline need 21).
const MAX_EPOCH_FILE_BYTES: u64 = 64;

/// The epoch after `epoch`, never above [`MAX_EPOCH`] (a reader refuses a higher one, which
/// would leave the client offline for good); at the top it stays at the top.
pub fn next_epoch(epoch: u64) -> u64 {
    epoch.saturating_add(1).min(MAX_EPOCH)
}

/// The presence report of a session.
pub fn presence(online: bool, epoch: u64, version: &str) -> Presence {
    Presence {
        signature: None,
        schema: PresenceSchema::V1,
        online,
        epoch,
        version: Some(version.to_owned()),
    }
}

/// The unsigned JSON bytes of [`presence`].
pub fn presence_payload(online: bool, epoch: u64, version: &str) -> Vec<u8> {
    serde_json::to_vec(&presence(online, epoch, version)).unwrap_or_default()
}

/// The file that holds a session epoch (`"<epoch>\n"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochFile(PathBuf);

impl EpochFile {
    /// The epoch file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        EpochFile(path.into())
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The stored epoch: 0 when the file is missing or unreadable or does not hold one
    /// number (surrounding whitespace allowed) of at most [`MAX_EPOCH`]. At most
    /// 64 bytes are read.
    pub fn load(&self) -> u64 {
        let mut text = String::new();
        let read = std::fs::File::open(&self.0)
            .and_then(|f| f.take(MAX_EPOCH_FILE_BYTES).read_to_string(&mut text));
        read.ok()
            .and_then(|_| text.trim().parse::<u64>().ok())
            .filter(|e| *e <= MAX_EPOCH)
            .unwrap_or(0)
    }

    /// Stores `epoch` atomically and durably ([`write_atomic`]).
    pub fn save(&self, epoch: u64) -> Result<(), WriteError> {
        write_atomic(&self.0, format!("{epoch}\n").as_bytes())
    }
}

/// An epoch counter that persists every epoch it hands out before handing it out.
#[derive(Debug, Clone)]
pub struct EpochCounter {
    last: u64,
    file: Option<EpochFile>,
}

impl EpochCounter {
    /// Opens the counter at the highest of `floor` and what `file` holds (see
    /// [`EpochFile::load`]). Without a file the counter lives in memory only.
    pub fn open(file: Option<EpochFile>, floor: u64) -> Self {
        let stored = file.as_ref().map_or(0, EpochFile::load);
        EpochCounter {
            last: floor.max(stored).min(MAX_EPOCH),
            file,
        }
    }

    /// The last epoch handed out (or found at open).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Increments the counter and persists it (fsynced) before returning it. A failed write
    /// is returned with the new epoch: the caller may still use it.
    pub fn advance(&mut self) -> (u64, Result<(), WriteError>) {
        self.last = next_epoch(self.last);
        let written = match &self.file {
            Some(f) => f.save(self.last),
            None => Ok(()),
        };
        (self.last, written)
    }

    /// [`advance`](Self::advance) off the async threads (the write fsyncs); a failed write
    /// is logged and the new epoch used all the same.
    pub async fn next(&mut self) -> u64 {
        let mut c = self.clone();
        let (epoch, written) = match tokio::task::spawn_blocking(move || {
            let r = c.advance();
            (c, r)
        })
        .await
        {
            Ok((c, r)) => {
                *self = c;
                (r.0, r.1.map_err(|e| e.to_string()))
            }
            Err(e) => {
                self.last = next_epoch(self.last);
                (self.last, Err(e.to_string()))
            }
        };
        if let Err(e) = written {
            tracing::error!(error = %e, epoch, "cannot persist the presence epoch");
        }
        epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_counter_is_persisted_and_only_grows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = EpochFile::new(dir.path().join("lo-epoch"));
        let mut c = EpochCounter::open(Some(file.clone()), 0);
        assert_eq!(c.last(), 0);
        assert_eq!(c.advance().0, 1);
        let (e, written) = c.advance();
        assert_eq!(e, 2);
        assert!(written.is_ok());
        // A restart continues from the file, not from a clock.
        let mut again = EpochCounter::open(Some(file.clone()), 0);
        assert_eq!(again.last(), 2);
        assert_eq!(again.advance().0, 3);
        // A higher floor (the state file of an older LO) wins.
        let mut older = EpochCounter::open(Some(file), 1_700_000_000_000);
        assert_eq!(older.advance().0, 1_700_000_000_001);
    }

    #[test]
    fn hostile_epoch_file_content_counts_as_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = EpochFile::new(dir.path().join("epoch"));
        assert_eq!(file.load(), 0, "missing");
        for (content, expected) in [
            ("41\n", 41),
            ("  42  \n", 42),
            ("", 0),
            ("-1", 0),
            ("1e9", 0),
            ("abc", 0),
            ("7 8", 0),
            ("18446744073709551616", 0),
            ("18446744073709551615", 0),
            ("9007199254740992", 0),
            ("9007199254740991", MAX_EPOCH),
        ] {
            std::fs::write(file.path(), content).expect("write");
            assert_eq!(file.load(), expected, "{content:?}");
        }
        std::fs::write(file.path(), [0xff, 0xfe, b'1']).expect("write");
        assert_eq!(file.load(), 0, "not UTF-8");
        // A file of a megabyte of digits is not read whole, and is no epoch.
        std::fs::write(file.path(), "1".repeat(1 << 20)).expect("write");
        assert_eq!(file.load(), 0, "oversized");
        // At the top the counter stays at the top: never above what readers accept, never
        // wrapping to a stale epoch.
        file.save(MAX_EPOCH).expect("save");
        let mut c = EpochCounter::open(Some(file.clone()), u64::MAX);
        assert_eq!(c.advance().0, MAX_EPOCH);
        assert_eq!(file.load(), MAX_EPOCH);
    }

    #[test]
    fn epoch_file_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = EpochFile::new(dir.path().join("epoch"));
        file.save(9).expect("save");
        assert_eq!(std::fs::read_to_string(file.path()).expect("read"), "9\n");
        assert_eq!(file.load(), 9);
    }

    #[tokio::test]
    async fn next_persists_off_the_async_threads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = EpochFile::new(dir.path().join("lo-epoch"));
        let mut c = EpochCounter::open(Some(file.clone()), 4);
        assert_eq!(c.next().await, 5);
        assert_eq!(file.load(), 5);
        // A write that fails still hands out the epoch.
        let mut lost = EpochCounter::open(Some(EpochFile::new(dir.path().join("x/y"))), 0);
        assert_eq!(lost.next().await, 1);
        assert_eq!(lost.last(), 1);
    }

    #[test]
    fn presence_payload_is_the_wire_presence() {
        let bytes = presence_payload(false, 7, "1.2.3");
        let p: Presence = serde_json::from_slice(&bytes).expect("presence");
        assert_eq!(p, presence(false, 7, "1.2.3"));
        assert!(!p.online);
        assert_eq!(p.epoch, 7);
        assert_eq!(p.version.as_deref(), Some("1.2.3"));
        assert!(p.signature.is_none());
    }
}
