package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is the unit of the CPU times in /proc/PID/stat: USER_HZ, 100 on
// every Linux architecture Go runs on (sysconf(_SC_CLK_TCK)).
const clockTick = 10 * time.Millisecond

// procStat is what the benchmark reads from /proc/PID/stat.
type procStat struct {
	pid, ppid      int
	state          byte
	utime, stime   uint64 // clock ticks spent by the process itself
	cutime, cstime uint64 // and by its children that exited and were waited for
}

// parseStat parses the contents of /proc/PID/stat. The command name, in
// parentheses, may hold spaces and parentheses, so the fields are counted
// from the last ')'.
func parseStat(b []byte) (procStat, error) {
	var st procStat
	open := bytes.IndexByte(b, '(')
	i := bytes.LastIndexByte(b, ')')
	if open < 1 || i < open {
		return st, errors.New("no command name in parentheses")
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:open])))
	if err != nil {
		return st, fmt.Errorf("pid: %w", err)
	}
	st.pid = pid
	// After ')': state(3) ppid(4) pgrp session tty_nr tpgid flags minflt
	// cminflt majflt cmajflt utime(14) stime cutime cstime(17).
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return st, fmt.Errorf("%d fields after the command name, want at least 15", len(f))
	}
	st.state = f[0][0]
	nums := make([]uint64, 0, 5)
	for _, k := range []int{1, 11, 12, 13, 14} {
		n, err := strconv.ParseInt(f[k], 10, 64)
		if err != nil {
			return st, fmt.Errorf("field %d: %w", k+3, err)
		}
		nums = append(nums, uint64(max(n, 0)))
	}
	st.ppid = int(nums[0])
	st.utime, st.stime, st.cutime, st.cstime = nums[1], nums[2], nums[3], nums[4]
	return st, nil
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// ticks turns clock ticks into a duration.
func ticks(n uint64) time.Duration { return time.Duration(n) * clockTick }

// processCPU is the CPU time (user and system) of one process, its threads
// included: how Petrel, one process, is measured.
func processCPU(pid int) (time.Duration, error) {
	st, err := readStat(pid)
	if err != nil {
		return 0, fmt.Errorf("reading the CPU time of process %d: %w", pid, err)
	}
	return ticks(st.utime + st.stime), nil
}

// treeCPU is the CPU time of a process and of its children: its own user
// and system time, the times of its children that exited and that it
// waited for (cutime, cstime), and the user and system time of every child
// alive now. That is how Postfix is measured: its master starts every
// daemon (smtpd, cleanup, qmgr, virtual, ...) and reaps them, so a delta of
// treeCPU covers the work of daemons that lived through the interval, that
// started in it, and that exited in it. Grandchildren are not counted
// (Postfix's daemons do not fork in this setup).
func treeCPU(parent int) (time.Duration, error) {
	root, err := readStat(parent)
	if err != nil {
		return 0, fmt.Errorf("reading the CPU time of process %d: %w", parent, err)
	}
	total := root.utime + root.stime + root.cutime + root.cstime
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == parent {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.ppid != parent {
			continue // gone meanwhile, or not a child
		}
		total += st.utime + st.stime
	}
	return ticks(total), nil
}

// memory is resident memory summed over processes, in bytes.
type memory struct {
	RSS, PSS  int64
	Processes int
}

// parseRollup reads the Rss and Pss lines (in kB) of
// /proc/PID/smaps_rollup.
func parseRollup(b []byte) (rss, pss int64, err error) {
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "Rss" && k != "Pss") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("%s: unexpected %q", k, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", k, err)
		}
		if k == "Rss" {
			rss = n << 10
		} else {
			pss = n << 10
		}
		found++
	}
	if found != 2 {
		return 0, 0, errors.New("no Rss and Pss lines")
	}
	return rss, pss, nil
}

// memoryOf sums the RSS and PSS of pids. A process that is gone meanwhile
// is skipped.
func memoryOf(pids []int) (memory, error) {
	var m memory
	for _, pid := range pids {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "smaps_rollup"))
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue
		}
		if err != nil {
			return m, fmt.Errorf("reading the memory of process %d: %w", pid, err)
		}
		rss, pss, err := parseRollup(b)
		if err != nil {
			if len(b) == 0 {
				continue // a zombie, or a kernel thread
			}
			return m, fmt.Errorf("/proc/%d/smaps_rollup: %w", pid, err)
		}
		m.RSS += rss
		m.PSS += pss
		m.Processes++
	}
	return m, nil
}

// commOf returns a process's command name, or "" if it is gone.
func commOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
