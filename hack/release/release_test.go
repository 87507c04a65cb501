// Package release checks the artefacts that `make release-snapshot` writes
// to dist/ as a user of each would: the image as a container runtime reads
// its layout, the plugin as krew installs it, the chart as Helm packages and
// renders it. `make test-release` runs it with the build's version and flags;
// it is not part of `make test`.
package release

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"debug/macho"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"sigs.k8s.io/yaml"
)

// What every release has: the manager image for these platforms, the
// plugin for these.
var (
	imagePlatforms  = []string{"linux/amd64", "linux/arm64"}
	pluginPlatforms = []string{"darwin/amd64", "darwin/arm64", "linux/amd64", "linux/arm64"}
)

const (
	module         = "github.com/careplane/careplane"
	managerPath    = "/ko-app/manager"
	pluginBinary   = "kubectl-careplane"
	krewPluginName = "careplane"
	spdxMediaType  = "text/spdx+json"
)

// env is what the Makefile hands the test: where the artefacts are, the
// version and ldflags they were built with, and the tools to check them.
type env struct {
	dist, version        string
	imageBinary          string // bin/linux/manager, as `make build-image-binary` builds it
	helm, krew, validate string
}

func getEnv(t *testing.T) env {
	t.Helper()
	e := env{
		dist:        os.Getenv("DIST"),
		version:     os.Getenv("VERSION"),
		imageBinary: os.Getenv("IMAGE_BINARY"),
		helm:        os.Getenv("HELM"),
		krew:        os.Getenv("KREW"),
		validate:    os.Getenv("VALIDATE_KREW_MANIFEST"),
	}
	if e.dist == "" || e.version == "" {
		t.Fatal("DIST and VERSION must be set; run `make test-release` (after `make release-snapshot`)")
	}
	if _, err := os.Stat(e.dist); err != nil {
		t.Fatalf("no artefacts: %v; run `make release-snapshot`", err)
	}
	return e
}

func TestImage(t *testing.T) {
	e := getEnv(t)
	dir := filepath.Join(e.dist, "image")
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatalf("reading the OCI layout %s: %v", dir, err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}

	// The version names exactly one image index.
	var named []v1.Descriptor
	for _, d := range tm.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] == e.version {
			named = append(named, d)
		}
	}
	if len(named) != 1 || !named[0].MediaType.IsIndex() {
		t.Fatalf("index.json: want one image index named %q (org.opencontainers.image.ref.name), got %v", e.version, named)
	}
	idxDesc := named[0]
	idx, err := top.ImageIndex(idxDesc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range im.Manifests {
		if d.Platform == nil {
			t.Fatalf("manifest %s of the index has no platform", d.Digest)
		}
		got = append(got, d.Platform.String())
	}
	slices.Sort(got)
	if !slices.Equal(got, imagePlatforms) {
		t.Fatalf("image platforms: got %v, want %v", got, imagePlatforms)
	}

	sboms := sbomSubjects(t, p, tm)
	if _, ok := sboms[idxDesc.Digest]; !ok {
		t.Errorf("no SPDX SBOM in the layout has the image index %s as its subject", idxDesc.Digest)
	}

	for _, d := range im.Manifests {
		platform := d.Platform.String()
		t.Run(platform, func(t *testing.T) {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.OS+"/"+cf.Architecture != platform {
				t.Errorf("config says %s/%s, the index says %s", cf.OS, cf.Architecture, platform)
			}
			if !slices.Equal(cf.Config.Entrypoint, []string{managerPath}) {
				t.Errorf("entrypoint: got %q, want [%q]", cf.Config.Entrypoint, managerPath)
			}
			files := filesOf(t, img, managerPath, "/etc/passwd")
			uid := checkNonRoot(t, cf.Config.User, files["/etc/passwd"])
			t.Logf("runs as %q (uid %d), entrypoint %q", cf.Config.User, uid, cf.Config.Entrypoint)

			bin, ok := files[managerPath]
			if !ok {
				t.Fatalf("the image has no %s", managerPath)
			}
			checkBuild(t, bin, "cmd/manager", cf.OS, cf.Architecture, e.version)
			if platform == "linux/amd64" && e.imageBinary != "" {
				want, err := os.ReadFile(e.imageBinary)
				if err != nil {
					t.Fatal(err)
				}
				if sha(bin) != sha(want) {
					t.Errorf("%s in the image (sha256 %s) is not the binary `make build-image-binary` builds, as the Dockerfile does (%s, sha256 %s)",
						managerPath, sha(bin), e.imageBinary, sha(want))
				}
			}

			doc, ok := sboms[d.Digest]
			if !ok {
				t.Fatalf("no SPDX SBOM in the layout has the %s image %s as its subject", platform, d.Digest)
			}
			checkSPDX(t, doc)
		})
	}

	// The single-file form of the same layout.
	archive := filepath.Join(e.dist, fmt.Sprintf("careplane-manager_%s.oci.tar", e.version))
	files := untar(t, archive, false)
	wantIndex, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(files["index.json"], wantIndex) {
		t.Errorf("%s: its index.json is not the layout's", archive)
	}
	if _, ok := files["blobs/sha256/"+idxDesc.Digest.Hex]; !ok {
		t.Errorf("%s lacks the image index blob %s", archive, idxDesc.Digest)
	}
}

// sbomSubjects returns, for every manifest that an SPDX referrer in the
// layout's index.json describes, the SPDX document.
func sbomSubjects(t *testing.T, p layout.Path, tm *v1.IndexManifest) map[v1.Hash][]byte {
	t.Helper()
	out := map[v1.Hash][]byte{}
	for _, d := range tm.Manifests {
		if d.ArtifactType != spdxMediaType {
			continue
		}
		raw, err := readBlob(p, d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		var m v1.Manifest
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("SBOM manifest %s: %v", d.Digest, err)
		}
		if m.Subject == nil || len(m.Layers) != 1 || m.Layers[0].MediaType != spdxMediaType {
			t.Fatalf("SBOM manifest %s: want a subject and one %s layer, got %s", d.Digest, spdxMediaType, raw)
		}
		doc, err := readBlob(p, m.Layers[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		out[m.Subject.Digest] = doc
	}
	return out
}

func readBlob(p layout.Path, h v1.Hash) ([]byte, error) {
	rc, err := p.Blob(h)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rc.Close() }()
	return io.ReadAll(rc)
}

// checkSPDX: an SPDX 2 document that lists careplane's module among its
// packages, with the Go modules it was built from.
func checkSPDX(t *testing.T, doc []byte) {
	t.Helper()
	var spdx struct {
		SPDXVersion string `json:"spdxVersion"`
		Packages    []struct {
			Name string `json:"name"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(doc, &spdx); err != nil {
		t.Fatalf("SBOM is not JSON: %v", err)
	}
	if !strings.HasPrefix(spdx.SPDXVersion, "SPDX-2.") {
		t.Errorf("SBOM spdxVersion %q, want SPDX-2.x", spdx.SPDXVersion)
	}
	var names []string
	for _, p := range spdx.Packages {
		names = append(names, p.Name)
	}
	if !slices.Contains(names, module) || !slices.Contains(names, "k8s.io/api") {
		t.Errorf("SBOM packages %v: want %s and its dependencies (k8s.io/api among them)", names, module)
	}
}

// checkNonRoot: the image's user is a numeric, non-zero uid (Kubernetes'
// runAsNonRoot can only verify a numeric one) that /etc/passwd names.
func checkNonRoot(t *testing.T, user string, passwd []byte) int {
	t.Helper()
	uidStr, _, _ := strings.Cut(user, ":")
	uid, err := strconv.Atoi(uidStr)
	if err != nil || uid == 0 {
		t.Errorf("image user %q: want a numeric non-root uid (runAsNonRoot cannot verify a name, and 0 is root)", user)
		return uid
	}
	found := false
	for line := range strings.SplitSeq(string(passwd), "\n") {
		f := strings.Split(line, ":")
		if len(f) > 2 && f[2] == uidStr {
			found = true
		}
	}
	if !found {
		t.Errorf("uid %d is not in the image's /etc/passwd:\n%s", uid, passwd)
	}
	return uid
}

// checkBuild: the binary is careplane's, for goos/goarch, static (no cgo),
// built with -trimpath and the Makefile's LDFLAGS: stripped (-s -w) and
// stamped with the version (-X). Go leaves -ldflags out of the build info
// of a -trimpath build, so the flags are checked by their effect.
func checkBuild(t *testing.T, bin []byte, pkg, goos, goarch, version string) {
	t.Helper()
	bi, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("reading the binary's build info: %v", err)
	}
	if bi.Path != module+"/"+pkg {
		t.Errorf("binary is %s, want %s/%s", bi.Path, module, pkg)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	want := map[string]string{"GOOS": goos, "GOARCH": goarch, "CGO_ENABLED": "0", "-trimpath": "true"}
	for k, v := range want {
		if settings[k] != v {
			t.Errorf("binary built with %s=%q, want %q", k, settings[k], v)
		}
	}
	if !bytes.Contains(bin, []byte(version)) {
		t.Errorf("binary is not stamped with the version %s (-X .../internal/version.Version)", version)
	}
	if symbols, err := hasSymbols(bin, goos); err != nil {
		t.Error(err)
	} else if symbols {
		t.Errorf("binary has a symbol table or DWARF, want it stripped (-s -w)")
	}
}

func hasSymbols(bin []byte, goos string) (bool, error) {
	r := bytes.NewReader(bin)
	switch goos {
	case "linux":
		f, err := elf.NewFile(r)
		if err != nil {
			return false, err
		}
		return f.Section(".symtab") != nil || f.Section(".debug_info") != nil, nil
	case "darwin":
		f, err := macho.NewFile(r)
		if err != nil {
			return false, err
		}
		// A darwin binary keeps the symbols it imports from libSystem
		// even with -s; DWARF is what -w removes.
		return f.Section("__debug_info") != nil || f.Segment("__DWARF") != nil, nil
	}
	return false, fmt.Errorf("no check of symbols for %s", goos)
}

// filesOf returns the named files of the image's flattened filesystem.
func filesOf(t *testing.T, img v1.Image, names ...string) map[string][]byte {
	t.Helper()
	rc := mutate.Extract(img)
	defer func() { _ = rc.Close() }()
	out := map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := "/" + strings.TrimPrefix(h.Name, "/")
		if slices.Contains(names, name) {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			out[name] = b
		}
	}
	return out
}

func TestPlugin(t *testing.T) {
	e := getEnv(t)
	dir := filepath.Join(e.dist, "plugin")
	short := strings.TrimPrefix(e.version, "v")

	sums := map[string]string{}
	checksums := filepath.Join(dir, fmt.Sprintf("%s_%s_checksums.txt", pluginBinary, short))
	f, err := os.Open(checksums)
	if err != nil {
		t.Fatalf("checksums file: %v", err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("%s: line %q is not `<sha256>  <file>`", checksums, sc.Text())
		}
		sums[name] = sum
	}
	_ = f.Close()

	archives := map[string]string{} // platform: archive path
	for _, platform := range pluginPlatforms {
		goos, goarch, _ := strings.Cut(platform, "/")
		name := fmt.Sprintf("%s_%s_%s_%s.tar.gz", pluginBinary, short, goos, goarch)
		path := filepath.Join(dir, name)
		archives[platform] = path
		t.Run(platform, func(t *testing.T) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("archive: %v", err)
			}
			if sums[name] != sha(b) {
				t.Errorf("%s: sha256 %s, the checksums file says %q", name, sha(b), sums[name])
			}
			files := untar(t, path, true)
			if _, ok := files["LICENSE"]; !ok {
				t.Errorf("%s has no LICENSE (krew installs it beside the plugin)", name)
			}
			bin, ok := files[pluginBinary]
			if !ok {
				t.Fatalf("%s has no %s: %v", name, pluginBinary, keys(files))
			}
			checkBuild(t, bin, "cmd/"+pluginBinary, goos, goarch, e.version)
		})
	}

	t.Run("krew", func(t *testing.T) {
		manifest := filepath.Join(dir, "krew", krewPluginName+".yaml")
		checkKrewManifest(t, manifest, e.version, sums, archives)
		if e.validate != "" {
			// krew's own structural validation of an index manifest.
			run(t, nil, e.validate, "-manifest", manifest, "-skip-install")
		}
		if e.krew == "" {
			return
		}
		// krew installs each platform from its archive, as it would from the
		// release's URL: it checks the sha256 and the binary it names.
		for _, platform := range pluginPlatforms {
			goos, goarch, _ := strings.Cut(platform, "/")
			root := t.TempDir()
			run(t, []string{"KREW_ROOT=" + root, "KREW_OS=" + goos, "KREW_ARCH=" + goarch},
				e.krew, "install", "--manifest="+manifest, "--archive="+archives[platform])
			installed := filepath.Join(root, "bin", pluginBinary)
			if _, err := os.Lstat(installed); err != nil {
				t.Errorf("krew install for %s: %v", platform, err)
				continue
			}
			if platform == runtime.GOOS+"/"+runtime.GOARCH {
				out := run(t, nil, installed, "--version")
				if !strings.Contains(out, e.version) {
					t.Errorf("`%s --version` installed by krew says %q, want the version %s", pluginBinary, out, e.version)
				}
			}
		}
	})
}

// krewManifest is the part of krew's Plugin (krew.googlecontainertools.github.com/v1alpha2)
// that a release decides.
type krewManifest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version   string `json:"version"`
		Platforms []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Bin    string `json:"bin"`
		} `json:"platforms"`
	} `json:"spec"`
}

func checkKrewManifest(t *testing.T, path, version string, sums, archives map[string]string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("krew manifest: %v", err)
	}
	var m krewManifest
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("krew manifest %s: %v", path, err)
	}
	if m.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || m.Kind != "Plugin" || m.Metadata.Name != krewPluginName {
		t.Errorf("krew manifest: %s %s %q, want krew.googlecontainertools.github.com/v1alpha2 Plugin %q", m.APIVersion, m.Kind, m.Metadata.Name, krewPluginName)
	}
	if m.Spec.Version != version {
		t.Errorf("krew manifest version %q, want %q", m.Spec.Version, version)
	}
	var got []string
	for _, p := range m.Spec.Platforms {
		platform := p.Selector.MatchLabels["os"] + "/" + p.Selector.MatchLabels["arch"]
		got = append(got, platform)
		archive := filepath.Base(archives[platform])
		if p.SHA256 != sums[archive] || p.SHA256 == "" {
			t.Errorf("krew manifest: %s sha256 %q, the archive %s has %q", platform, p.SHA256, archive, sums[archive])
		}
		if !strings.HasSuffix(p.URI, "/"+version+"/"+archive) {
			t.Errorf("krew manifest: %s uri %q, want the release %s's %s", platform, p.URI, version, archive)
		}
		if p.Bin != pluginBinary {
			t.Errorf("krew manifest: %s bin %q, want %q", platform, p.Bin, pluginBinary)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, pluginPlatforms) {
		t.Errorf("krew manifest platforms %v, want %v", got, pluginPlatforms)
	}
}

func TestChart(t *testing.T) {
	e := getEnv(t)
	// An OCI tag: what `helm push` turns the chart version into.
	if !regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`).MatchString(e.version) {
		t.Errorf("version %q is not a valid OCI tag, `helm push` would refuse it", e.version)
	}
	tgz := filepath.Join(e.dist, "chart", fmt.Sprintf("careplane-%s.tgz", e.version))
	files := untar(t, tgz, true)
	var chart struct {
		Name, Version, AppVersion string
	}
	if err := yaml.Unmarshal(files["careplane/Chart.yaml"], &chart); err != nil {
		t.Fatalf("%s: Chart.yaml: %v", tgz, err)
	}
	if chart.Name != "careplane" || chart.Version != e.version || chart.AppVersion != e.version {
		t.Errorf("%s: Chart.yaml name %q version %q appVersion %q, want careplane %s %s", tgz, chart.Name, chart.Version, chart.AppVersion, e.version, e.version)
	}
	for _, f := range []string{"careplane/values.schema.json", "careplane/README.md"} {
		if _, ok := files[f]; !ok {
			t.Errorf("%s has no %s", tgz, f)
		}
	}
	if e.helm == "" {
		return
	}
	// What a user installs: the packaged chart runs the image of the same
	// version.
	out := run(t, nil, e.helm, "template", "careplane", tgz, "--namespace", "careplane-system")
	want := "image: careplane/manager:" + e.version
	if !strings.Contains(out, want) {
		t.Errorf("helm template %s: no %q in the render", tgz, want)
	}
}

// untar returns the regular files of a tar (gzipped when gz) archive.
func untar(t *testing.T, path string, gz bool) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var r io.Reader = f
	if gz {
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		r = zr
	}
	out := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = b
	}
}

func run(t *testing.T, extraEnv []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), extraEnv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func keys(m map[string][]byte) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	slices.Sort(k)
	return k
}
