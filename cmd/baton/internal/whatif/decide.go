package whatif

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/baton-voice/baton/cmd/baton/internal/replay"
)

// Decided is what the router decided for a batch of calls.
type Decided struct {
	Records []replay.Record
	// Matches counts, per rule name, the calls it matched (once per call).
	Matches map[string]int
}

// Decider re-decides a batch of recorded records.
type Decider func(ctx context.Context, recs []replay.Record) (Decided, error)

// RouterDecider runs `router replay` with the configuration in rules,
// copied to dir with debug logging on: the router's fold logs every rule
// that matches ("rule matched", with call id and rule), which is how the
// what-if counts rule hits, including rules that only set variables or
// state. The commands it decides do not name their rule when the
// request gave a reason, so they cannot tell.
func RouterDecider(routerBin, rules, dir string) (Decider, error) {
	cfg, err := debugConfig(rules, dir)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, recs []replay.Record) (Decided, error) {
		return decide(ctx, routerBin, cfg, recs)
	}, nil
}

// debugConfig writes rules with log level debug and format json to dir.
func debugConfig(rules, dir string) (string, error) {
	data, err := os.ReadFile(rules)
	if err != nil {
		return "", fmt.Errorf("rules: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return "", fmt.Errorf("rules %s: %w", rules, err)
	}
	if doc == nil {
		doc = map[string]any{}
	}
	doc["log"] = map[string]any{"level": "debug", "format": "json"}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return "", fmt.Errorf("rules %s: %w", rules, err)
	}
	path := filepath.Join(dir, "whatif-"+filepath.Base(rules))
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return "", fmt.Errorf("rules copy: %w", err)
	}
	return path, nil
}

// stderrTail is how much of the router's other stderr is kept for an
// error message.
const stderrTail = 4096

func decide(ctx context.Context, routerBin, cfg string, recs []replay.Record) (Decided, error) {
	steps := replay.Steps(recs)
	ordered := make([]replay.Record, len(steps))
	for i, s := range steps {
		ordered[i] = s.Record
	}
	var in, out bytes.Buffer
	if err := replay.WriteNDJSON(&in, ordered); err != nil {
		return Decided{}, err
	}
	cmd := exec.CommandContext(ctx, routerBin, "replay", "--config", cfg)
	cmd.Stdin, cmd.Stdout = &in, &out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return Decided{}, err
	}
	if err := cmd.Start(); err != nil {
		return Decided{}, fmt.Errorf("%s replay: %w", routerBin, err)
	}
	matches, other := readMatches(stderr)
	if err := cmd.Wait(); err != nil {
		return Decided{}, fmt.Errorf("%s replay --config %s: %w: %s", routerBin, cfg, err, strings.TrimSpace(other))
	}
	decided, err := replay.ReadNDJSON(&out, "")
	if err != nil {
		return Decided{}, fmt.Errorf("read %s replay output: %w", routerBin, err)
	}
	return Decided{Records: decided, Matches: matches}, nil
}

// readMatches reads the router's JSON log until EOF and counts the
// "rule matched" lines, once per call and rule; it keeps the tail of
// the other lines.
func readMatches(r io.Reader) (map[string]int, string) {
	matches := map[string]int{}
	seen := map[[2]string]bool{}
	var other []byte
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg    string `json:"msg"`
			Rule   string `json:"rule"`
			CallID string `json:"call_id"`
			Level  string `json:"level"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "rule matched" {
			if k := [2]string{line.CallID, line.Rule}; !seen[k] {
				seen[k] = true
				matches[line.Rule]++
			}
			continue
		}
		if line.Level == "DEBUG" {
			continue
		}
		other = append(other, sc.Bytes()...)
		other = append(other, '\n')
		if len(other) > stderrTail {
			other = other[len(other)-stderrTail:]
		}
	}
	_, _ = io.Copy(io.Discard, r) // a line past the scanner's limit: drain so the router can exit
	return matches, string(other)
}
