// Command conformance runs Kubernetes' own conformance tests (e2e.test and
// ginkgo, built by ../shared/conformance/build.sh) against `pontoon dev`
// in a network namespace of its own, and prints which passed and which
// failed.
//
// No registry is reachable here, so the images the tests run are made on
// the node and imported under the names the suite asks for: agnhost (built
// with the suite) on busybox, busybox, pause, and httpd and nginx played by
// busybox's httpd on port 80. Tests that need another image fail pulling
// it.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/pontoon-dev/pontoon/node/localimage"
	"github.com/pontoon-dev/pontoon/test/cluster"
)

func main() {
	home, _ := os.UserHomeDir()
	binDir := flag.String("suite", filepath.Join(home, ".cache/pontoon-conformance/bin"), "where build.sh put e2e.test, ginkgo and agnhost")
	focus := flag.String("focus", `\[sig-node\].*\[Conformance\]`, "ginkgo focus: the tests to run")
	skip := flag.String("skip", `\[Serial\]`, "ginkgo skip")
	procs := flag.Int("procs", 4, "tests run at once")
	logPath := flag.String("log", "conformance.log", "the suite's output")
	flag.Parse()
	bin := os.Getenv("PONTOON_BIN")
	if bin == "" {
		log.Fatal("PONTOON_BIN: the pontoon binary to test")
	}
	r := cluster.NewRunner("pontoon-conformance-")
	defer r.Close()
	// Ctrl-C removes what the run started: the suite, pontoon dev, its
	// namespace.
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-interrupted
		r.Fatalf("interrupted")
	}()
	// The node has an address of its own, which pods reach as their
	// node's (HostPort and NodePort tests); 127.0.0.1 would be theirs.
	d := cluster.StartDev(r, bin, "pontoon-conformance", "--node-ip", conformanceNodeIP)
	ctx := context.Background()
	curl := filepath.Join(r.TempDir(), "curl")
	if err := os.WriteFile(curl, []byte(curlScript), 0o755); err != nil {
		r.Fatalf("%v", err)
	}
	// The images' shell is Debian's static bash: busybox's runs its own
	// applets (nc) before any on the PATH.
	if _, err := os.Stat(bashStatic); err != nil {
		r.Fatalf("%v: install Debian's bash-static (make conformance does)", err)
	}
	// dig, getent and an nc with the options the suite uses.
	netutils := filepath.Join(r.TempDir(), "netutils")
	build := exec.Command("go", "build", "-o", netutils, "./conformance/netutils")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		r.Fatalf("build netutils: %v: %s", err, out)
	}
	cert, key, err := porterCert(r.TempDir())
	if err != nil {
		r.Fatalf("agnhost porter's certificate: %v", err)
	}
	for _, img := range images(filepath.Join(*binDir, "agnhost"), curl, netutils, bashStatic, cert, key) {
		var b bytes.Buffer
		if err := localimage.Write(ctx, &b, img, localimage.BusyboxPath); err != nil {
			r.Fatalf("image %s: %v", img.Name, err)
		}
		archive := filepath.Join(r.TempDir(), "image.tar")
		if err := os.WriteFile(archive, b.Bytes(), 0o644); err != nil {
			r.Fatalf("%v", err)
		}
		if out, errOut, code := d.Netns.Run(bin, "image", "import", archive, "--data-dir", filepath.Join(d.DataDir, "agent")); code != 0 {
			r.Fatalf("import %s: %s%s", img.Name, out, errOut)
		}
	}

	out, err := os.Create(*logPath)
	if err != nil {
		r.Fatalf("%v", err)
	}
	defer out.Close()
	cmd := d.Netns.Command(filepath.Join(*binDir, "ginkgo"), fmt.Sprintf("--procs=%d", *procs), "--timeout=3h", "--keep-going", "--no-color",
		"--focus="+*focus, "--skip="+*skip, filepath.Join(*binDir, "e2e.test"), "--",
		"--kubeconfig="+d.Kubeconfig(), "--provider=skeleton", "--kubectl-path=/usr/bin/kubectl", "--minStartupPods=0",
		"--dump-logs-on-failure=false", "--e2e-verify-service-account=false")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	log.Printf("running the suite (%s), output in %s", *focus, *logPath)
	runErr := cmd.Run()
	log.Printf("the suite ran %v: %v", time.Since(start).Round(time.Second), runErr)
	summarize(*logPath)
}

// conformanceNodeIP is the node's address, on its namespace's lo.
const conformanceNodeIP = "10.252.0.1"

// bashStatic is Debian's statically linked bash (bash-static).
const bashStatic = "/bin/bash-static"

// curlScript stands in for curl, which busybox lacks, as far as the
// suite's commands use it: a GET of one URL, printed.
const curlScript = `#!/bin/sh
url=
for a; do case "$a" in -*) ;; *) url=$a ;; esac; done
exec wget -q -O - "$url"
`

// images are the images the suite runs, as busybox images with the
// names it asks for.
func images(agnhost, curl, netutils, sh, cert, key string) []localimage.Image {
	web := []string{"httpd", "-f", "-p", "80", "-h", "/var/www"}
	pause, _ := localimage.Lookup(localimage.Pause)
	return []localimage.Image{
		{Name: "registry.k8s.io/e2e-test-images/agnhost:2.53", Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"},
			Files: map[string]string{"agnhost": agnhost, "agnhost-2": agnhost, "bin/sh": sh, "usr/bin/curl": curl,
				"usr/local/bin/dig": netutils, "usr/local/bin/getent": netutils, "usr/local/bin/nc": netutils,
				"localhost.crt": cert, "localhost.key": key}},
		{Name: "registry.k8s.io/e2e-test-images/busybox:1.36.1-1", Cmd: []string{"sh"}, Files: map[string]string{"usr/bin/curl": curl}},
		{Name: "registry.k8s.io/e2e-test-images/jessie-dnsutils:1.7", Cmd: []string{"sh"},
			Files: map[string]string{"bin/sh": sh, "usr/local/bin/dig": netutils, "usr/local/bin/getent": netutils}},
		{Name: "registry.k8s.io/pause:3.10", Entrypoint: pause.Entrypoint},
		{Name: "registry.k8s.io/e2e-test-images/httpd:2.4.38-4", Cmd: web},
		{Name: "registry.k8s.io/e2e-test-images/httpd:2.4.39-4", Cmd: web},
		{Name: "registry.k8s.io/e2e-test-images/nginx:1.14-4", Cmd: web},
		{Name: "registry.k8s.io/e2e-test-images/nginx:1.15-4", Cmd: web},
	}
}

// porterCert writes the self-signed certificate and key for 127.0.0.1
// that agnhost's image holds for `porter`'s TLS ports, and returns their
// paths.
func porterCert(dir string) (certPath, keyPath string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certPath, keyPath = filepath.Join(dir, "localhost.crt"), filepath.Join(dir, "localhost.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certPath, keyPath, os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o644)
}

// summarize prints the tests that passed and failed, from ginkgo's
// output: the "[FAIL]" lines of its summary and its "Ran N of M" line.
func summarize(path string) {
	f, err := os.Open(path)
	if err != nil {
		log.Print(err)
		return
	}
	defer f.Close()
	failLine := regexp.MustCompile(`^\s*\[FAIL\] (.*\[Conformance\].*)$`)
	failed := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := failLine.FindStringSubmatch(line); m != nil {
			failed[strings.TrimSpace(m[1])] = true
		}
		if strings.HasPrefix(line, "Ran ") || strings.Contains(line, " Passed | ") {
			fmt.Println(line)
		}
	}
	names := make([]string, 0, len(failed))
	for n := range failed {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Printf("failed (%d):\n", len(names))
	for _, n := range names {
		fmt.Println("  " + n)
	}
}
