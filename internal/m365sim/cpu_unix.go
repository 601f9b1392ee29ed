//go:build unix

package m365sim

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time this process has used (all threads), in
// user and system mode, from getrusage(RUSAGE_SELF).
func processCPU() (user, system time.Duration, ok bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0, false
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano()), true
}
