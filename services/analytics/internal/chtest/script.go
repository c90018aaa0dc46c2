package chtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"time"
)

// Script is a deploy/local start/stop script run for one directory that
// holds all of what it starts: `Path start|stop Dir`.
type Script struct {
	Path, Dir string
	// Timeout bounds one run.
	Timeout time.Duration
}

// Run runs the script's cmd with env added to the environment.
func (s Script) Run(cmd string, env ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
	defer cancel()
	c := exec.CommandContext(ctx, s.Path, cmd, s.Dir)
	c.Env = append(os.Environ(), env...)
	return c.CombinedOutput()
}

// Stop runs `stop` and removes the directory; when stop fails it keeps
// the directory (its logs) and says so on stderr, naming who asked.
func (s Script) Stop(who string) {
	if s.Dir == "" {
		return
	}
	if out, err := s.Run("stop"); err != nil {
		_, _ = fmt.Fprintf(os.Stderr, "%s: %s stop: %v (kept %s)\n%s", who, s.Path, err, s.Dir, out)
		return
	}
	_ = os.RemoveAll(s.Dir)
}
