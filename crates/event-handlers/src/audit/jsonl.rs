//! The JSON Lines writer with size-based rotation: `audit.jsonl`, then `audit.1.jsonl`
//! (newest rotated) up to `audit.{max_files - 1}.jsonl` (oldest).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::Error;

#[derive(Debug)]
pub(super) struct JsonLinesWriter {
    dir: PathBuf,
    max_file_bytes: u64,
    max_files: usize,
    file: File,
    bytes: u64,
    rotations: u64,
}

fn audit_error(path: &Path, message: &str, source: std::io::Error) -> Error {
    Error::Audit {
        location: path.display().to_string(),
        message: format!("{message}: {source}; check EVENT_AUDIT_DIR and its permissions"),
        source: Some(Box::new(source)),
    }
}

impl JsonLinesWriter {
    pub(super) fn open(dir: PathBuf, max_file_bytes: u64, max_files: usize) -> Result<Self, Error> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| audit_error(&dir, "cannot create the directory", e))?;
        let path = dir.join("audit.jsonl");
        let file = open_append(&path).map_err(|e| audit_error(&path, "cannot open the file", e))?;
        let bytes = file
            .metadata()
            .map_err(|e| audit_error(&path, "cannot read the file's size", e))?
            .len();
        Ok(Self {
            dir,
            max_file_bytes: max_file_bytes.max(1),
            max_files: max_files.max(1),
            file,
            bytes,
            rotations: 0,
        })
    }

    pub(super) fn current_path(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    fn rotated_path(&self, n: usize) -> PathBuf {
        self.dir.join(format!("audit.{n}.jsonl"))
    }

    pub(super) fn current_bytes(&self) -> u64 {
        self.bytes
    }

    pub(super) fn rotations(&self) -> u64 {
        self.rotations
    }

    pub(super) fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    pub(super) fn max_files(&self) -> usize {
        self.max_files
    }

    /// Appends one line (with its newline), rotating first if it would pass the size limit.
    /// A line longer than the limit goes alone into a fresh file.
    pub(super) fn append(&mut self, line: &[u8]) -> Result<(), Error> {
        if self.bytes > 0 && self.bytes + line.len() as u64 > self.max_file_bytes {
            self.rotate()?;
        }
        let path = self.current_path();
        self.file
            .write_all(line)
            .map_err(|e| audit_error(&path, "cannot append", e))?;
        self.bytes += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), Error> {
        let current = self.current_path();
        self.file
            .sync_data()
            .map_err(|e| audit_error(&current, "cannot flush before rotating", e))?;
        if self.max_files == 1 {
            // Only the current file is kept: start it again.
            self.file =
                File::create(&current).map_err(|e| audit_error(&current, "cannot truncate", e))?;
        } else {
            let oldest = self.rotated_path(self.max_files - 1);
            match std::fs::remove_file(&oldest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(audit_error(&oldest, "cannot remove the oldest file", e)),
            }
            for n in (1..self.max_files - 1).rev() {
                let from = self.rotated_path(n);
                if from.exists() {
                    let to = self.rotated_path(n + 1);
                    std::fs::rename(&from, &to)
                        .map_err(|e| audit_error(&from, "cannot rotate", e))?;
                }
            }
            let first = self.rotated_path(1);
            std::fs::rename(&current, &first)
                .map_err(|e| audit_error(&current, "cannot rotate", e))?;
            self.file = open_append(&current)
                .map_err(|e| audit_error(&current, "cannot open the file", e))?;
        }
        self.bytes = 0;
        self.rotations += 1;
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "event-handlers-{name}-{}",
            event_core::EventId::new()
        ))
    }

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = scratch("rotation");
        let mut writer = JsonLinesWriter::open(dir.clone(), 25, 3).unwrap();
        for i in 0..10 {
            writer
                .append(format!("{{\"n\":{i:02}}}\n").as_bytes())
                .unwrap();
        }
        // 9-byte lines, two per file: five files written, three kept.
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(dir.join("audit.jsonl")), "{\"n\":08}\n{\"n\":09}\n");
        assert_eq!(read(dir.join("audit.1.jsonl")), "{\"n\":06}\n{\"n\":07}\n");
        assert_eq!(read(dir.join("audit.2.jsonl")), "{\"n\":04}\n{\"n\":05}\n");
        assert!(!dir.join("audit.3.jsonl").exists());
        assert_eq!(writer.rotations(), 4);
        // Reopening appends to the current file.
        drop(writer);
        let mut writer = JsonLinesWriter::open(dir.clone(), 25, 3).unwrap();
        assert_eq!(writer.current_bytes(), 18);
        writer.append(b"{\"n\":10}\n").unwrap();
        assert_eq!(read(dir.join("audit.1.jsonl")), "{\"n\":08}\n{\"n\":09}\n");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
