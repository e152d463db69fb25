// Package testbin builds the petrel binary once for the tests that run it as
// a separate process (interoperability and crash tests).
package testbin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const buildTimeout = 5 * time.Minute

// Main builds cmd/petrel into a temporary directory, sets *bin to its path,
// runs the tests and returns their exit status, for TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testbin.Main(m, "interop", &petrelBin)) }
func Main(m *testing.M, name string, bin *string) int {
	tmp, err := os.MkdirTemp("", "petrel-"+name+"-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	b, err := Build(tmp)
	if err != nil {
		fmt.Fprintln(os.Stderr, name+": building cmd/petrel:", err)
		return 1
	}
	*bin = b
	return m.Run()
}

// Build runs `go build -o dir/petrel ./cmd/petrel` in the module root, found
// with `go env GOMOD`, and returns the binary's path.
func Build(dir string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside a module")
	}
	bin := filepath.Join(dir, "petrel")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/petrel")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%w\n%s", err, out)
	}
	return bin, nil
}
