package crashpoint

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// TestHit runs this test binary again with a point set: a crashpoints build
// dies by SIGKILL at the n-th hit and not before; a normal build never dies.
func TestHit(t *testing.T) {
	if os.Getenv("CRASHPOINT_CHILD") != "" {
		for i := range 5 {
			os.Stdout.WriteString("hit\n")
			Hit(BeforeQueue)
			_ = i
		}
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHit$")
	cmd.Env = append(os.Environ(), "CRASHPOINT_CHILD=1", Setting+"="+BeforeQueue+"#3")
	out, err := cmd.Output()
	var ee *exec.ExitError
	killed := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
	if Enabled {
		if !killed || string(out) != "hit\nhit\nhit\n" {
			t.Errorf("crashpoints build: killed %v after %q (%v), want SIGKILL at the third hit", killed, out, err)
		}
	} else if err != nil || killed {
		t.Errorf("product build: the child ended with %v; Hit must do nothing", err)
	}
}
