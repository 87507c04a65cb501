package csidriver

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// volume is what the driver records about a volume in <root>/volumes/<id>/meta.json.
type volume struct {
	ID            string             `json:"id"`
	Name          string             `json:"name"`
	CapacityBytes int64              `json:"capacityBytes"`
	Parameters    map[string]string  `json:"parameters,omitempty"`
	Source        contentSource      `json:"source,omitzero"`
	Created       time.Time          `json:"created"`
	Publishes     map[string]publish `json:"publishes,omitempty"` // by target path
}

// contentSource is where a volume's first bytes came from: at most one field is set.
type contentSource struct {
	SnapshotID string `json:"snapshotID,omitempty"`
	VolumeID   string `json:"volumeID,omitempty"`
}

// publish records one NodePublishVolume of a volume.
type publish struct {
	ReadOnly   bool  `json:"readOnly,omitempty"`
	AccessMode int32 `json:"accessMode"`
}

// snapshot is what the driver records about a snapshot in <root>/snapshots/<id>/meta.json.
type snapshot struct {
	ID             string            `json:"id"`
	Name           string            `json:"name"`
	SourceVolumeID string            `json:"sourceVolumeID"`
	SizeBytes      int64             `json:"sizeBytes"`
	Parameters     map[string]string `json:"parameters,omitempty"`
	Created        time.Time         `json:"created"`
	ReadyToUse     bool              `json:"readyToUse"`
}

const (
	volumePrefix   = "vol-"
	snapshotPrefix = "snap-"
	metaFile       = "meta.json"
	dataDir        = "data"
)

// IDs are generated here, so anything else is not ours. Checking the form
// before an ID becomes part of a path also keeps a request from naming a
// path outside the root ("../..").
var (
	volumeIDPattern   = regexp.MustCompile(`^vol-[0-9a-f]{16}$`)
	snapshotIDPattern = regexp.MustCompile(`^snap-[0-9a-f]{16}$`)
)

// store holds the driver's state on disk under root and an index of it in
// memory. It is not safe for concurrent use: the driver serialises calls.
type store struct {
	root      string
	volumes   map[string]*volume
	snapshots map[string]*snapshot
}

func openStore(root string) (*store, error) {
	s := &store{root: root, volumes: map[string]*volume{}, snapshots: map[string]*snapshot{}}
	// Whatever is left in tmp is a volume or snapshot whose creation or
	// deletion was interrupted: never visible, so safe to drop.
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		return nil, err
	}
	for _, d := range []string{s.tmpDir(), filepath.Join(root, "volumes"), filepath.Join(root, "snapshots")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := loadAll(filepath.Join(root, "volumes"), volumeIDPattern, s.volumes); err != nil {
		return nil, err
	}
	if err := loadAll(filepath.Join(root, "snapshots"), snapshotIDPattern, s.snapshots); err != nil {
		return nil, err
	}
	return s, nil
}

func loadAll[T any](dir string, idPattern *regexp.Regexp, into map[string]*T) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !idPattern.MatchString(e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), metaFile))
		if err != nil {
			return err
		}
		v := new(T)
		if err := json.Unmarshal(b, v); err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(dir, e.Name(), metaFile), err)
		}
		into[e.Name()] = v
	}
	return nil
}

func (s *store) tmpDir() string                   { return filepath.Join(s.root, "tmp") }
func (s *store) volumeDir(id string) string       { return filepath.Join(s.root, "volumes", id) }
func (s *store) snapshotDir(id string) string     { return filepath.Join(s.root, "snapshots", id) }
func (s *store) volumeDataDir(id string) string   { return filepath.Join(s.volumeDir(id), dataDir) }
func (s *store) snapshotDataDir(id string) string { return filepath.Join(s.snapshotDir(id), dataDir) }

func (s *store) volume(id string) *volume {
	if !volumeIDPattern.MatchString(id) {
		return nil
	}
	return s.volumes[id]
}

func (s *store) snapshot(id string) *snapshot {
	if !snapshotIDPattern.MatchString(id) {
		return nil
	}
	return s.snapshots[id]
}

func (s *store) volumeByName(name string) *volume {
	for _, v := range s.volumes {
		if v.Name == name {
			return v
		}
	}
	return nil
}

func (s *store) snapshotByName(name string) *snapshot {
	for _, sn := range s.snapshots {
		if sn.Name == name {
			return sn
		}
	}
	return nil
}

// allocated is the capacity promised to volumes.
func (s *store) allocated() int64 {
	var n int64
	for _, v := range s.volumes {
		n += v.CapacityBytes
	}
	return n
}

// sortedVolumes lists volumes oldest first, the order pagination walks.
func (s *store) sortedVolumes() []*volume {
	vs := make([]*volume, 0, len(s.volumes))
	for _, v := range s.volumes {
		vs = append(vs, v)
	}
	slices.SortFunc(vs, func(a, b *volume) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return vs
}

func (s *store) sortedSnapshots() []*snapshot {
	ss := make([]*snapshot, 0, len(s.snapshots))
	for _, sn := range s.snapshots {
		ss = append(ss, sn)
	}
	slices.SortFunc(ss, func(a, b *snapshot) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return ss
}

// createVolume builds the volume in tmp, its data a copy of from when from
// is set, and renames it into place.
func (s *store) createVolume(v *volume, from string) error {
	if err := s.create(s.volumeDir(v.ID), v, from); err != nil {
		return err
	}
	s.volumes[v.ID] = v
	return nil
}

func (s *store) createSnapshot(sn *snapshot, from string) error {
	if err := s.create(s.snapshotDir(sn.ID), sn, from); err != nil {
		return err
	}
	s.snapshots[sn.ID] = sn
	return nil
}

func (s *store) create(final string, meta any, from string) error {
	tmp, err := os.MkdirTemp(s.tmpDir(), "create-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) //nolint:errcheck // gone after the rename; only a failure leaves it
	data := filepath.Join(tmp, dataDir)
	if from != "" {
		err = copyTree(from, data)
	} else {
		err = os.Mkdir(data, 0o755)
	}
	if err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(tmp, metaFile), meta); err != nil {
		return err
	}
	return os.Rename(tmp, final)
}

// saveVolume rewrites a volume's record after a change (expansion, publish).
func (s *store) saveVolume(v *volume) error {
	return writeJSON(filepath.Join(s.volumeDir(v.ID), metaFile), v)
}

func (s *store) deleteVolume(id string) error {
	if err := s.remove(s.volumeDir(id)); err != nil {
		return err
	}
	delete(s.volumes, id)
	return nil
}

func (s *store) deleteSnapshot(id string) error {
	if err := s.remove(s.snapshotDir(id)); err != nil {
		return err
	}
	delete(s.snapshots, id)
	return nil
}

// remove makes dir disappear in one step (a rename into tmp), then deletes it.
func (s *store) remove(dir string) error {
	tmp, err := os.MkdirTemp(s.tmpDir(), "delete-")
	if err != nil {
		return err
	}
	if err := os.Rename(dir, filepath.Join(tmp, "x")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.RemoveAll(tmp)
}

// writeJSON replaces path atomically.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// copyTree copies the directory src to dst, which must not exist: regular
// files with their modes and modification times, directories, and symbolic
// links as links (never followed, so a link in a volume cannot pull in files
// from outside it). Other file types (sockets, devices) are not data and are
// skipped.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.Mkdir(target, info.Mode().Perm()|0o700)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			if err := copyFile(path, target, info.Mode().Perm()); err != nil {
				return err
			}
			return os.Chtimes(target, info.ModTime(), info.ModTime())
		default:
			return nil
		}
	})
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close() //nolint:errcheck // read-only
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close() //nolint:errcheck,gosec // the copy's error is the one to report
		return err
	}
	return out.Close()
}

// usedBytes is the size of the regular files under dir.
func usedBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}

func newID(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return prefix + hex.EncodeToString(b)
}
