package main

import (
	"bufio"
	"context"
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// machine describes where and what the benchmark ran.
type machine struct {
	NProc      int
	CPUModel   string
	Memory     string
	Kernel     string
	FileSystem string // of the run's directory
	Postfix    string
	OpenSSL    string
	Go         string // the Go that built the measured petrel
	Petrel     string // its commit, "-dirty" when built from a modified tree
	PetrelPath string
	Tools      string // the petrel binary that ran the load and the sink, when another one
}

// describeMachine gathers the report's header. A value it cannot find
// is "unknown (why)".
func describeMachine(ctx context.Context, dir, petrelBin, toolsBin, petrelCommit, toolsCommit string) machine {
	m := machine{NProc: runtime.NumCPU(), PetrelPath: petrelBin}
	m.CPUModel = firstField("/proc/cpuinfo", "model name")
	if mem := firstField("/proc/meminfo", "MemTotal"); !strings.HasPrefix(mem, "unknown") {
		var kb int64
		if _, err := fmt.Sscanf(mem, "%d kB", &kb); err == nil {
			mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
		m.Memory = mem
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	} else {
		m.Kernel = unknown(err)
	}
	m.FileSystem = fileSystem(ctx, dir)
	m.OpenSSL = output(ctx, "openssl", "version")
	m.Go, m.Petrel = binaryVersion(ctx, petrelBin, petrelCommit)
	if toolsBin != petrelBin {
		_, rev := binaryVersion(ctx, toolsBin, toolsCommit)
		m.Tools = fmt.Sprintf("%s (%s)", toolsBin, rev)
	}
	return m
}

func unknown(err error) string { return fmt.Sprintf("unknown (%v)", err) }

// firstField returns the value of the first "key : value" line of a
// /proc file.
func firstField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return unknown(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return unknown(fmt.Errorf("no %s in %s", key, path))
}

// output runs a command and returns its first line of output.
func output(ctx context.Context, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return unknown(err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// fileSystem says on what file system dir is: device, type, mount point.
func fileSystem(ctx context.Context, dir string) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "df", "-PT", dir).Output()
	if err != nil {
		return unknown(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	f := strings.Fields(lines[len(lines)-1])
	if len(f) < 7 {
		return unknown(fmt.Errorf("df -PT %s: %q", dir, lines[len(lines)-1]))
	}
	return fmt.Sprintf("%s (%s on %s, mounted on %s)", dir, f[1], f[0], f[6])
}

// binaryVersion reads the Go version and the VCS revision a binary was
// built with (go build records them, unless -buildvcs=false). Without a
// revision it falls back on commit (a flag), then on the git tree the
// binary is in.
func binaryVersion(ctx context.Context, path, commit string) (goVersion, revision string) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return unknown(err), unknown(err)
	}
	if commit != "" {
		return bi.GoVersion, commit
	}
	rev, modified := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return bi.GoVersion, gitCommit(ctx, filepath.Dir(path))
	}
	if len(rev) > 7 {
		rev = rev[:7]
	}
	if modified {
		rev += "-dirty"
	}
	return bi.GoVersion, rev
}

// gitCommit describes the commit checked out in the git tree holding dir:
// the short hash, "-dirty" when the tree has changes. It is what a binary
// in that tree was built from if the tree did not change since.
func gitCommit(ctx context.Context, dir string) string {
	rev := output(ctx, "git", "-C", dir, "rev-parse", "--short", "HEAD")
	if strings.HasPrefix(rev, "unknown") {
		return "unknown (no build information, not in a git tree)"
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "git", "-C", dir, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
		rev += "-dirty"
	}
	return rev + " (the git tree the binary is in)"
}

// fsTopDirFlag is ext4's EXT4_TOPDIR_FL (FS_TOPDIR_FL in linux/fs.h), which
// chattr +T sets.
const fsTopDirFlag = 0x00020000

// spreadSubdirs marks dir as the top of a directory hierarchy (chattr +T),
// so that ext4 places each directory made in it (Postfix's instances,
// Petrel's data directory) in a block group of its own, as it does for
// directories at the root of a file system, instead of next to dir. The
// servers then do not share block groups: on ext4 without a journal (as
// here) a file created in a group where many inodes were freed in the
// last 60 s is slow to create (the inode allocator skips each recently
// deleted inode, reading its inode block: recently_deleted), and Postfix
// frees an inode per message (its queue file), so a server running right
// after it in the same group pays for Postfix's deletions — as no server
// on a machine of its own would. Each server still pays for its own. It
// fails on file systems without the flag; the caller notes it.
func spreadSubdirs(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return fmt.Errorf("reading the inode flags of %s: %w", dir, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags|fsTopDirFlag)); err != nil {
		return fmt.Errorf("setting the top-directory flag (chattr +T) on %s: %w", dir, err)
	}
	return nil
}
