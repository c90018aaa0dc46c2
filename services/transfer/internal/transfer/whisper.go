package transfer

import (
	"context"

	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/services/transfer/internal/bridge"
	"github.com/baton-voice/baton/services/transfer/internal/whisper"
)

// whisper plays the audio to the destination before the caller is moved
// to the bridge. It returns false when the transfer ended (outcome
// published, destination BYEd when still there).
func (w *warmRun) whisper(ctx context.Context) bool {
	audio, codec := *w.audio, w.codec
	frames, err := audio.Frames(codec.Name)
	if err != nil {
		w.byeLeg(ctx)
		w.publish(ctx, failed(0, "", "whisper: "+err.Error()))
		return false
	}
	playCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := w.br.Play(playCtx, bridge.Destination, codec.PT, whisper.FrameSamples, frames)
		done <- result{n, err}
	}()
	var why string
	byeDestination := true
	for why == "" {
		select {
		case r := <-done:
			if r.err != nil {
				w.byeLeg(ctx)
				w.publish(ctx, failed(0, "", "whisper: "+r.err.Error()))
				return false
			}
			w.log.InfoContext(ctx, "whisper played", "packets", r.n, "duration", audio.Duration().String())
			return true
		case <-w.leg.Context().Done():
			why, byeDestination = "destination hung up during the whisper", false
		case fact := <-w.facts:
			if _, ok := fact.(*batonv1.CallEnded); ok {
				why = "caller hung up during the whisper"
			}
		case <-ctx.Done():
			why = "transfer shut down during the whisper"
		}
	}
	cancel()
	<-done
	if byeDestination {
		w.byeLeg(ctx)
	}
	w.publish(ctx, failed(0, "", why))
	return false
}
