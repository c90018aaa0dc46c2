package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
)

// cpuRounds compares the relays' CPU per packet at one call count, rounds
// times, the contenders interleaved in every round (their order rotating
// from round to round). On a shared machine the same step can cost 30%
// more in one minute than the next; a contender measured right after
// the baseline, many times over, shows what is its own. It prints each
// round, then per contender the median, lowest and highest of its ratio
// to the rtp bridge measured in the same round.
func cpuRounds(ctx context.Context, w io.Writer, cfg *config, calls, rounds int) error {
	var relays []contender
	for _, c := range cfg.contenders {
		if c.relay != "" {
			relays = append(relays, c)
		}
	}
	if !slices.ContainsFunc(relays, func(c contender) bool { return c.name == "rtp" }) || len(relays) < 2 {
		return fmt.Errorf("-cpu-rounds compares with the rtp bridge: -modes needs rtp and at least one other relay")
	}
	fmt.Fprintf(w, "cpu per packet, %d calls, %d rounds, contenders interleaved (us per packet relayed; a step with loss over 0.1%% is not counted, its delay is not judged here)\n", calls, rounds)
	perRound := make([]map[string]float64, 0, rounds)
	for round := range rounds {
		got := map[string]float64{}
		var row strings.Builder
		fmt.Fprintf(&row, "  round %d:", round+1)
		for i := range relays {
			c := relays[(i+round)%len(relays)]
			res, err := measureStep(ctx, io.Discard, cfg, c, calls)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round+1, c.name, err)
			}
			if res.sent > 0 && res.loss() <= maxLoss {
				got[c.name] = res.usPerPacket
				fmt.Fprintf(&row, " %s %.2f", c.name, res.usPerPacket)
			} else {
				fmt.Fprintf(&row, " %s lost %.3f%%", c.name, 100*res.loss())
			}
		}
		fmt.Fprintln(w, row.String())
		perRound = append(perRound, got)
	}
	for _, c := range relays {
		if c.name == "rtp" {
			continue
		}
		var ratios []float64
		for _, got := range perRound {
			if x, y := got[c.name], got["rtp"]; x > 0 && y > 0 {
				ratios = append(ratios, x/y)
			}
		}
		if len(ratios) == 0 {
			fmt.Fprintf(w, "  %-8s no round where it and rtp both counted\n", c.name)
			continue
		}
		slices.Sort(ratios)
		med := ratios[len(ratios)/2]
		if len(ratios)%2 == 0 {
			med = (ratios[len(ratios)/2-1] + ratios[len(ratios)/2]) / 2
		}
		line := fmt.Sprintf("  %-8s %.2fx rtp's cpu per packet (median of %d rounds; lowest %.2fx, highest %.2fx)",
			c.name, med, len(ratios), ratios[0], ratios[len(ratios)-1])
		if c.suite != "" {
			line += fmt.Sprintf("; %+.0f%% (target <= +%.0f%%: %s)", 100*(med-1), 100*targetSRTPCost, yesNo(med-1 <= targetSRTPCost))
		}
		fmt.Fprintln(w, line)
	}
	return nil
}
