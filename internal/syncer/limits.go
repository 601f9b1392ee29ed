package syncer

import (
	"strings"

	"github.com/profilesync/profilesync/internal/mapping"
)

// Limits on the blobs the engine reads whole (Blobs.Get). Each is far above
// what the engine itself writes, so that only a damaged or hand-made blob
// reaches one; the store (azstorage.Blobs.SetLimits) refuses a larger blob
// without reading it, with an error naming the blob and the limit that wraps
// profile.ErrTooLarge.
const (
	// MaxRecordBytes bounds the small records: polls/<jobId>.json,
	// current-run.json, fingerprints/manifest.json (its 500 merged job ids
	// included). Each is well under 64 KiB.
	MaxRecordBytes = 1 << 20
	// MaxStateBytes bounds state.json: a delta link (a few kilobytes) and up
	// to MaxResendUsers users to send again (about 150 bytes each).
	MaxStateBytes = 8 << 20
	// MaxRunBytes bounds a run record: a few hundred bytes per import file
	// (a full sync of a million users writes a few files) and per job, and
	// the users a lookup did not find (about 40 bytes each). Decoding a
	// record costs up to about 36 times its size (fuzzed), so the limits
	// stay near what the engine can write.
	MaxRunBytes = 8 << 20
	// MaxJobBytes bounds a job record: up to MaxResults (5,000) per-user
	// results of a log line each (MaxLogLine, 1 KiB; SharePoint's are a
	// few hundred bytes). The poller keeps fewer results rather than write
	// a larger record.
	MaxJobBytes = 8 << 20
	// MaxFingerprintBlobBytes bounds the fingerprint store's other blobs
	// (streamed, not read whole, by the merge).
	MaxFingerprintBlobBytes = 1 << 30
)

// BlobLimit is the most bytes a blob of this name in the state container may
// hold to be read whole: MappingBlob mapping.MaxSize (1 MiB), and the limits
// above for the engine's records; MaxRecordBytes for any other name.
func BlobLimit(name string) int64 {
	switch {
	case name == MappingBlob:
		return mapping.MaxSize
	case name == StateBlob:
		return MaxStateBytes
	case strings.HasPrefix(name, RunsPrefix):
		return MaxRunBytes
	case strings.HasPrefix(name, JobsPrefix):
		return MaxJobBytes
	case name != FingerprintsManifest && strings.HasPrefix(name, "fingerprints/"):
		return MaxFingerprintBlobBytes
	}
	return MaxRecordBytes
}
