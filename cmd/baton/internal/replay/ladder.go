package replay

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/baton-voice/baton/cmd/baton/internal/termsafe"
	"github.com/baton-voice/baton/pkg/callview"
)

// The ladder's lanes (callview.LaneSBC and the others).
const (
	laneSBC      = callview.LaneSBC
	laneIngress  = callview.LaneIngress
	laneRouter   = callview.LaneRouter
	laneTransfer = callview.LaneTransfer
)

// Arrow is one message of the ladder (callview.Arrow).
type Arrow = callview.Arrow

// Ladder turns the call's steps into the messages they stand for
// (callview.Ladder).
func Ladder(steps []Step) []Arrow { return callview.Ladder(steps) }

// WriteHTML writes a standalone HTML page: the ladder as SVG and the
// timeline as a table (callview.WriteHTML).
func WriteHTML(w io.Writer, callID string, steps []Step, arrows []Arrow) error {
	return callview.WriteHTML(w, callID, steps, arrows)
}

// laneWidth is the distance between two lanes in the text ladder.
const laneWidth = 28

// WriteLadder draws the arrows as text, one line per message, time on the left.
func WriteLadder(w io.Writer, arrows []Arrow) error {
	lanes := callview.Lanes()
	width := laneWidth*(len(lanes)-1) + 1
	header := make([]byte, width+laneWidth)
	for i := range header {
		header[i] = ' '
	}
	for i, name := range lanes {
		copy(header[i*laneWidth:], name)
	}
	if _, err := fmt.Fprintf(w, "%10s  %s\n", "", strings.TrimRight(string(header), " ")); err != nil {
		return err
	}
	var start time.Time
	if len(arrows) > 0 {
		start = arrows[0].At
	}
	for _, a := range arrows {
		label := termsafe.String(a.Label)
		line := []byte(strings.Repeat(" ", width))
		for i := range lanes {
			line[i*laneWidth] = '|'
		}
		from, to := a.From*laneWidth, a.To*laneWidth
		var text string
		if from == to {
			line[from] = '*'
			text = string(line) + "  " + lanes[a.From] + ": " + label
		} else {
			lo, hi := min(from, to), max(from, to)
			for i := lo + 1; i < hi; i++ {
				line[i] = '-'
			}
			if to > from {
				line[hi-1] = '>'
			} else {
				line[lo+1] = '<'
			}
			if room := hi - lo - 5; len(label) > room {
				label = cut(label, max(room, 0))
			}
			mid := lo + (hi-lo-len(label))/2
			copy(line[mid:], label)
			text = string(line)
		}
		if _, err := fmt.Fprintf(w, "%9.3fs  %s\n", a.At.Sub(start).Seconds(), strings.TrimRight(text, " ")); err != nil {
			return err
		}
	}
	return nil
}

// cut shortens s to at most n bytes without splitting a rune.
func cut(s string, n int) string {
	for n > 0 && n < len(s) && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
