package main

// proc.go reads what the kernel counts: a process's CPU time, the
// machine's CPU time per core, and UDP drops per socket and in the
// loopback backlog. Linux only (/proc).

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// userHZ is the unit of /proc's CPU times (USER_HZ, 100 on Linux).
const userHZ = 100

// processCPU is the CPU time (user + system, all threads) of pid so far,
// from /proc/<pid>/stat.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu of %d: %w", pid, err)
	}
	// The command name may hold spaces: the fields follow the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("cpu of %d: bad stat %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("cpu of %d: short stat", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("cpu of %d: bad utime/stime %q %q", pid, f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// cpuTimes is /proc/stat's busy and steal time of the whole machine and of
// each core.
type cpuTimes struct {
	busy, steal time.Duration
	core        []time.Duration // busy per core
}

// machineCPU reads /proc/stat. Busy is user+nice+system+irq+softirq
// (guest time is inside user); steal is time the hypervisor gave to
// someone else.
func machineCPU() (cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, fmt.Errorf("machine cpu: %w", err)
	}
	var t cpuTimes
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		var v [8]uint64
		for i := range v {
			v[i], _ = strconv.ParseUint(f[i+1], 10, 64)
		}
		busy := time.Duration(v[0]+v[1]+v[2]+v[5]+v[6]) * time.Second / userHZ
		if f[0] == "cpu" {
			t.busy = busy
			t.steal = time.Duration(v[7]) * time.Second / userHZ
			continue
		}
		n, err := strconv.Atoi(f[0][3:])
		if err != nil {
			continue
		}
		for len(t.core) <= n {
			t.core = append(t.core, 0)
		}
		t.core[n] = busy
	}
	return t, nil
}

// udpDrops sums the drop counters of the IPv4 UDP sockets bound to the
// given local ports (/proc/net/udp's last column).
func udpDrops(ports map[uint16]bool) (uint64, error) {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return 0, fmt.Errorf("udp drops: %w", err)
	}
	var sum uint64
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		// sl local rem st tx:rx tr:when retr uid timeout inode ref ptr drops
		if len(f) < 13 {
			continue
		}
		i := strings.LastIndexByte(f[1], ':')
		if i < 0 {
			continue
		}
		port, err := strconv.ParseUint(f[1][i+1:], 16, 16)
		if err != nil || !ports[uint16(port)] {
			continue
		}
		d, _ := strconv.ParseUint(f[12], 10, 64)
		sum += d
	}
	return sum, nil
}

// backlogDrops sums the per-CPU input backlog drops (/proc/net/
// softnet_stat's second column): loopback packets dropped before any
// socket saw them.
func backlogDrops() (uint64, error) {
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		return 0, fmt.Errorf("backlog drops: %w", err)
	}
	var sum uint64
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		d, _ := strconv.ParseUint(f[1], 16, 64)
		sum += d
	}
	return sum, nil
}

// pinTo binds every thread of this process to cpu and runs Go on one P,
// so the process uses that core alone. Threads started later inherit the
// affinity of the thread that starts them.
func pinTo(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	// Twice: a thread started while the first pass ran may have inherited
	// the old affinity.
	for range 2 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("pin: %w", err)
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil {
				return fmt.Errorf("pin thread %d to cpu %d: %w", tid, cpu, err)
			}
		}
	}
	runtime.GOMAXPROCS(1)
	return nil
}

// realtime puts every thread of this process in SCHED_FIFO at prio
// (needs root or CAP_SYS_NICE); threads and processes started later
// inherit it. It keeps the load of other sessions on a shared machine
// from delaying the measured processes (the kernel still leaves others
// 5% of each core: sched_rt_runtime_us).
func realtime(prio int) error {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(prio)}
	for range 2 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("realtime: %w", err)
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetAttr(tid, &attr, 0); err != nil {
				return fmt.Errorf("SCHED_FIFO %d for thread %d: %w", prio, tid, err)
			}
		}
	}
	return nil
}

// policy is this thread's scheduling policy as text.
func policy() string {
	a, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		return "sched=?"
	}
	if a.Policy == unix.SCHED_FIFO {
		return "sched=fifo/" + strconv.Itoa(int(a.Priority))
	}
	return "sched=other nice=" + niceOf(os.Getpid())
}

// niceOf is the nice value of pid's main thread (/proc/<pid>/stat field
// 19), "?" if unknown.
func niceOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "?"
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "?"
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 17 {
		return "?"
	}
	return f[16]
}

// affinity describes the CPUs this process may run on, its GOMAXPROCS and
// its scheduling policy.
func affinity() string {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return "cpus=? gomaxprocs=" + strconv.Itoa(runtime.GOMAXPROCS(0)) + " " + policy()
	}
	var cpus []string
	for i := range 1024 { // unix.CPUSet's size
		if set.IsSet(i) {
			cpus = append(cpus, strconv.Itoa(i))
		}
	}
	return "cpus=" + strings.Join(cpus, ",") + " gomaxprocs=" + strconv.Itoa(runtime.GOMAXPROCS(0)) + " " + policy()
}
