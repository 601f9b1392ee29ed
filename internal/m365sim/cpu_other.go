//go:build !unix

package m365sim

import "time"

// processCPU is not implemented off Unix: GET /_sim/stats reports no CPU time.
func processCPU() (user, system time.Duration, ok bool) { return 0, 0, false }
