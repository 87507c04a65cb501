// Package csidriver is a CSI driver for tests: the storage behind the local
// test cluster's volumes and VolumeSnapshots.
//
// What is real is the contract. It serves the CSI Identity, Controller and
// Node services over gRPC on a unix socket, as any CSI driver does, so the
// real external-provisioner, csi-snapshotter and snapshot-controller can
// drive it, and it passes the CSI conformance suite (csi-sanity, see
// sanity_test.go): idempotency by name, the error codes the spec requires,
// pagination, capacity.
//
// What is simulated is the storage:
//
//   - A volume is a directory, <root>/volumes/<id>/data. Its capacity is a
//     number recorded beside it (meta.json) and accounted against the
//     driver's total capacity; nothing stops a writer from putting more bytes
//     in the directory.
//   - A snapshot is a full copy of a volume's directory at the moment of
//     CreateSnapshot, <root>/snapshots/<id>/data, taken synchronously, so it
//     is ready to use as soon as it exists. Snapshots do not count against the
//     capacity, and they are independent of their source volume: deleting the
//     volume keeps them.
//   - A volume created from a snapshot or cloned from a volume starts as a
//     full copy of that directory.
//   - Nothing is mounted (that would need privileges). NodePublishVolume makes
//     the target path a symbolic link to the volume's directory and records
//     the publish; NodeUnpublishVolume removes the link. A read-only publish
//     is recorded, not enforced. There is no ControllerPublishVolume (no
//     attach step) and no NodeStageVolume.
//
// Every volume's context carries its directory (VolumeContextDataDir), which
// Kubernetes copies into the PersistentVolume's spec.csi.volumeAttributes: a
// test finds the bytes behind a claim there, writes records into them, and
// reads them back after a restore.
//
// All state lives under the root directory: a restarted driver serves the
// same volumes and snapshots. A volume or snapshot is built in <root>/tmp and
// renamed into place, so a crash never leaves half of one visible.
package csidriver
