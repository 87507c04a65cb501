// Command build-image builds the careplane manager image with ko, without a
// Docker engine and without a registry on the network.
//
// ko takes its base image from a registry (or a Docker daemon); neither is
// reachable from a build machine with no network. So this command:
//
//  1. builds a minimal static base image from files it writes itself (a
//     passwd with the nonroot user 65532, /tmp, the build machine's CA
//     bundle), for every platform, and saves it as an OCI layout;
//  2. serves that base from an in-process registry on the loopback
//     interface, for exactly as long as ko runs, and points ko at it by
//     digest (KO_DEFAULTBASEIMAGE);
//  3. runs ko, which builds the manager for each platform with the
//     Makefile's ldflags and writes a multi-arch OCI layout and SPDX SBOMs;
//  4. attaches each SBOM to the image it describes as an OCI 1.1 referrer in
//     that layout (ko attaches them only when it pushes to a registry), names
//     the index with the version, and packs the layout into one tar file.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The user the image runs as, as in distroless' "nonroot".
const nonroot = 65532

// Media types of the SBOM referrers: ko's SPDX document, and the OCI empty
// config that artifacts without a config of their own carry.
const (
	spdxMediaType   = "text/spdx+json"
	emptyConfigType = "application/vnd.oci.empty.v1+json"
)

type options struct {
	ko         string
	root       string
	out        string
	repo       string
	version    string
	platforms  string
	caBundle   string
	sourceDate int64
}

func main() {
	var o options
	flag.StringVar(&o.ko, "ko", "", "path to the ko binary")
	flag.StringVar(&o.root, "root", ".", "the repository's root, where ko builds ./cmd/manager")
	flag.StringVar(&o.out, "out", "dist", "output directory")
	flag.StringVar(&o.repo, "repo", "careplane/manager", "the image's repository name")
	flag.StringVar(&o.version, "version", "", "the version: image tag and the manager's version stamp")
	flag.StringVar(&o.platforms, "platforms", "linux/amd64,linux/arm64", "comma-separated platforms")
	flag.StringVar(&o.caBundle, "ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "CA certificates bundle copied into the base image")
	flag.Int64Var(&o.sourceDate, "source-date-epoch", 0, "timestamp of every file and config (seconds since the epoch), for reproducible images")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("build-image: ")
	if o.ko == "" || o.version == "" {
		log.Fatal("-ko and -version are required")
	}
	if err := run(context.Background(), o); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, o options) error {
	root, err := filepath.Abs(o.root)
	if err != nil {
		return err
	}
	out, err := filepath.Abs(o.out)
	if err != nil {
		return err
	}
	baseDir := filepath.Join(out, "image-base")
	imageDir := filepath.Join(out, "image")
	sbomDir := filepath.Join(out, "sbom")
	for _, d := range []string{baseDir, imageDir, sbomDir} {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	created := time.Unix(o.sourceDate, 0).UTC()

	var platforms []v1.Platform
	for _, s := range strings.Split(o.platforms, ",") {
		p, err := v1.ParsePlatform(s)
		if err != nil {
			return fmt.Errorf("platform %q: %w", s, err)
		}
		platforms = append(platforms, *p)
	}
	ca, err := os.ReadFile(o.caBundle)
	if err != nil {
		return fmt.Errorf("reading the CA bundle for the base image: %w", err)
	}
	base, err := baseIndex(platforms, ca, created)
	if err != nil {
		return fmt.Errorf("building the base image: %w", err)
	}
	if _, err := layout.Write(baseDir, mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: base})); err != nil {
		return fmt.Errorf("writing the base image layout: %w", err)
	}
	baseDigest, err := base.Digest()
	if err != nil {
		return err
	}
	log.Printf("base image %s written to %s", baseDigest, baseDir)

	// Loopback only, and only while ko runs: it is the one way to hand ko a
	// base that is neither in a remote registry nor in a Docker daemon.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           registry.New(registry.Logger(log.New(io.Discard, "", 0))),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close() }()
	baseRepo, err := name.NewRepository(ln.Addr().String() + "/careplane/static-base")
	if err != nil {
		return err
	}
	baseRef := baseRepo.Digest(baseDigest.String())
	if err := remote.WriteIndex(baseRef, base, remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("serving the base image: %w", err)
	}

	cmd := exec.CommandContext(ctx, o.ko, "build", "./cmd/manager",
		"--platform="+o.platforms,
		"--push=false",
		"--bare",
		"--tags="+o.version,
		"--oci-layout-path="+imageDir,
		"--sbom=spdx",
		"--sbom-dir="+sbomDir,
	)
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"KO_DOCKER_REPO="+o.repo,
		"KO_DEFAULTBASEIMAGE="+baseRef.String(),
		"KO_CONFIG_PATH="+filepath.Join(root, "hack/release/ko.yaml"),
		"SOURCE_DATE_EPOCH="+strconv.FormatInt(o.sourceDate, 10),
		"KO_DATA_DATE_EPOCH="+strconv.FormatInt(o.sourceDate, 10),
	)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ko build: %w", err)
	}
	_ = srv.Close()

	if err := finishLayout(imageDir, sbomDir, o.version, baseDigest); err != nil {
		return err
	}
	archive := filepath.Join(out, fmt.Sprintf("careplane-manager_%s.oci.tar", o.version))
	if err := tarDir(imageDir, archive, created); err != nil {
		return fmt.Errorf("packing %s: %w", archive, err)
	}
	log.Printf("image %s:%s written to %s and %s", o.repo, o.version, imageDir, archive)
	return nil
}

// baseIndex is the static base: no shell, no package manager, only what a
// static Go binary reads (users, CA certificates, a writable /tmp), with the
// nonroot user as the default user.
func baseIndex(platforms []v1.Platform, ca []byte, created time.Time) (v1.ImageIndex, error) {
	files := []tarEntry{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/passwd", mode: 0o644, body: "root:x:0:0:root:/root:/sbin/nologin\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
			fmt.Sprintf("nonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", nonroot, nonroot)},
		{name: "etc/group", mode: 0o644, body: "root:x:0:\nnobody:x:65534:\n" + fmt.Sprintf("nonroot:x:%d:\n", nonroot)},
		{name: "etc/nsswitch.conf", mode: 0o644, body: "hosts: files dns\n"},
		{name: "etc/ssl/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, body: string(ca)},
		{name: "home/", mode: 0o755, dir: true},
		{name: "home/nonroot/", mode: 0o700, dir: true, uid: nonroot},
		{name: "root/", mode: 0o700, dir: true},
		{name: "tmp/", mode: 0o1777, dir: true},
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		if err := f.write(tw, created); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}

	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		img, err := mutate.AppendLayers(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1), layer)
		if err != nil {
			return nil, err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
		cf.Created = v1.Time{Time: created}
		cf.Config.User = fmt.Sprintf("%d:%d", nonroot, nonroot)
		cf.Config.WorkingDir = "/home/nonroot"
		cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
		img, err = mutate.ConfigFile(img, cf)
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	return idx, nil
}

type tarEntry struct {
	name string
	mode int64
	dir  bool
	uid  int
	body string
}

func (e tarEntry) write(tw *tar.Writer, created time.Time) error {
	h := &tar.Header{
		Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.uid, ModTime: created,
		Typeflag: tar.TypeReg, Size: int64(len(e.body)), Format: tar.FormatPAX,
	}
	if e.dir {
		h.Typeflag, h.Size = tar.TypeDir, 0
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err := io.WriteString(tw, e.body)
	return err
}

// finishLayout attaches ko's SBOMs to the images they describe, and names
// the index with the version (org.opencontainers.image.ref.name), so that
// `skopeo copy oci:dist/image:VERSION` and `crane push` find it.
func finishLayout(imageDir, sbomDir, version string, baseDigest v1.Hash) error {
	p, err := layout.FromPath(imageDir)
	if err != nil {
		return err
	}
	top, err := p.ImageIndex()
	if err != nil {
		return err
	}
	tm, err := top.IndexManifest()
	if err != nil {
		return err
	}
	if len(tm.Manifests) != 1 || !tm.Manifests[0].MediaType.IsIndex() {
		return fmt.Errorf("ko wrote %d manifests to %s, want one image index", len(tm.Manifests), imageDir)
	}
	idxDesc := tm.Manifests[0]
	idx, err := top.ImageIndex(idxDesc.Digest)
	if err != nil {
		return err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}

	// ko names its SBOM files <binary>-index.spdx.json and
	// <binary>-<os>-<arch>[-<variant>].spdx.json.
	if err := attachSBOM(p, idxDesc, filepath.Join(sbomDir, "manager-index.spdx.json")); err != nil {
		return err
	}
	for _, d := range im.Manifests {
		if d.Platform == nil {
			return fmt.Errorf("manifest %s in the index has no platform", d.Digest)
		}
		pf := strings.Join(nonEmpty(d.Platform.OS, d.Platform.Architecture, d.Platform.Variant), "-")
		if err := attachSBOM(p, d, filepath.Join(sbomDir, "manager-"+pf+".spdx.json")); err != nil {
			return err
		}
	}

	return p.ReplaceIndex(idx, match.Digests(idxDesc.Digest), layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name":    version,
		"org.opencontainers.image.version":     version,
		"org.opencontainers.image.base.digest": baseDigest.String(),
	}))
}

func nonEmpty(s ...string) []string {
	var r []string
	for _, x := range s {
		if x != "" {
			r = append(r, x)
		}
	}
	return r
}

// attachSBOM writes the SPDX document at file as an OCI 1.1 artifact whose
// subject is the manifest it describes, and lists it in the layout's
// index.json, where referrer-aware tools (oras, crane, cosign) look for it.
func attachSBOM(p layout.Path, subject v1.Descriptor, file string) error {
	doc, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("reading ko's SBOM: %w", err)
	}
	var spdx struct {
		SPDXVersion string `json:"spdxVersion"`
	}
	if err := json.Unmarshal(doc, &spdx); err != nil {
		return fmt.Errorf("%s is not an SPDX JSON document: %w", file, err)
	}
	if spdx.SPDXVersion == "" {
		return fmt.Errorf("%s is not an SPDX JSON document: no spdxVersion", file)
	}
	emptyConfig := []byte("{}")
	cfgDesc, err := writeBlob(p, emptyConfigType, emptyConfig)
	if err != nil {
		return err
	}
	docDesc, err := writeBlob(p, spdxMediaType, doc)
	if err != nil {
		return err
	}
	docDesc.Annotations = map[string]string{"org.opencontainers.image.title": filepath.Base(file)}
	subj := v1.Descriptor{MediaType: subject.MediaType, Size: subject.Size, Digest: subject.Digest}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  spdxMediaType,
		Config:        cfgDesc,
		Layers:        []v1.Descriptor{docDesc},
		Subject:       &subj,
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return err
	}
	mDesc, err := writeBlob(p, types.OCIManifestSchema1, raw)
	if err != nil {
		return err
	}
	mDesc.ArtifactType = spdxMediaType
	return p.AppendDescriptor(mDesc)
}

func writeBlob(p layout.Path, mt types.MediaType, b []byte) (v1.Descriptor, error) {
	sum := sha256.Sum256(b)
	h := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	if err := p.WriteBlob(h, io.NopCloser(bytes.NewReader(b))); err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: mt, Size: int64(len(b)), Digest: h}, nil
}

// tarDir packs an OCI layout into one file (an "oci-archive"), in a stable
// order with stable timestamps.
func tarDir(dir, file string, created time.Time) (err error) {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Name: rel + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: created})
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: rel, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: created}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
