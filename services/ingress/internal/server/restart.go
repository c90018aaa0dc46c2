package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/baton-voice/baton/pkg/events"
	"github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
)

// reasonIngressRestart is the CallEnded reason of a call that an earlier
// run of this ingress answered and never ended: the process died (SIGKILL,
// crash, power) with the call in its table, or shut down with the call
// still up after the drain. The dialog is gone with the process: a BYE or
// NOTIFY the far end sends for it now gets 481.
const reasonIngressRestart = "ingress_restart"

// RestartLookback is how far back EndOrphans looks for calls: a call
// answered longer ago than this before a crash gets no CallEnded.
const RestartLookback = time.Hour

// restartScanTimeout bounds EndOrphans' reading and publishing.
const restartScanTimeout = 2 * time.Minute

// EndOrphans publishes a CallEnded (ended_by BATON, reason ingress_restart)
// for every call that an earlier run of this ingress answered since since
// and that has none: it reads the calls topic from since to its end and
// takes the CallStarted facts whose dialog's local Contact is one of this
// server's (the address the far end sends the dialog's requests to, so
// another ingress's calls are never touched) and that no CallEnded
// follows. It also refuses, with 500, an INVITE that opens one of those
// calls again: the caller retransmitting an INVITE the dead process had
// published but not answered. Call it after Listen and before Serve; it
// returns the number of calls it ended.
func (s *Server) EndOrphans(ctx context.Context, since time.Time) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, restartScanTimeout)
	defer cancel()
	topic := s.cfg.Kafka.Topics.Calls
	mine := map[string]bool{s.localContact: true}
	for _, c := range s.contacts {
		mine[c] = true
	}
	cl, err := kgo.NewClient(kafka.ClientOpts(s.cfg.Kafka, s.log)...)
	if err != nil {
		return 0, fmt.Errorf("end orphaned calls: kafka client: %w", err)
	}
	defer cl.Close()
	ranges, err := readRanges(ctx, kadm.NewClient(cl), topic, since)
	if err != nil {
		return 0, fmt.Errorf("end orphaned calls: %w", err)
	}
	open := map[string]time.Time{}
	var order []string
	err = readTopic(ctx, s.cfg.Kafka, s.log, topic, ranges, func(rec *kgo.Record) {
		ev, err := events.Decode(rec)
		if err != nil {
			return // not ours to judge; consumers dead-letter it
		}
		switch m := ev.Data.(type) {
		case *batonv1.CallStarted:
			if mine[m.GetDialog().GetLocalContact()] {
				if _, ok := open[ev.Subject]; !ok {
					order = append(order, ev.Subject)
				}
				open[ev.Subject] = ev.Time
			}
		case *batonv1.CallEnded:
			delete(open, ev.Subject)
		}
	})
	if err != nil {
		return 0, fmt.Errorf("end orphaned calls: %w", err)
	}
	ended := 0
	var errs []error
	for _, id := range order {
		started, ok := open[id]
		if !ok {
			continue
		}
		s.orphans.Store(id, struct{}{})
		msg := &batonv1.CallEnded{
			CallId:   id,
			EndedBy:  batonv1.Party_PARTY_BATON,
			Reason:   reasonIngressRestart,
			Duration: durationpb.New(time.Since(started)),
		}
		if err := s.pub.publish(ctx, id, msg); err != nil {
			errs = append(errs, err)
			continue
		}
		s.log.InfoContext(ctx, "call ended: answered before a restart", "call_id", id, "reason", reasonIngressRestart,
			"started", started)
		ended++
	}
	return ended, errors.Join(errs...)
}

// refuseOrphan answers an initial INVITE of a call EndOrphans ended with
// 500 and reports whether it did.
func (s *Server) refuseOrphan(callID string, reply func()) bool {
	if _, ok := s.orphans.Load(callID); !ok {
		return false
	}
	s.log.Warn("invite of a call ended at restart refused", "call_id", callID)
	reply()
	return true
}

// offsetRange is the part of a partition to read: [start, end).
type offsetRange struct{ start, end int64 }

// readRanges returns, per partition of topic, the offsets from the first
// record at or after since to the end.
func readRanges(ctx context.Context, adm *kadm.Client, topic string, since time.Time) (map[int32]offsetRange, error) {
	starts, err := adm.ListOffsetsAfterMilli(ctx, since.UnixMilli(), topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("offsets of %s at %s: %w", topic, since.Format(time.RFC3339), err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	out := map[int32]offsetRange{}
	ends.Each(func(e kadm.ListedOffset) {
		st, ok := starts.Lookup(e.Topic, e.Partition)
		if ok && st.Offset >= 0 && st.Offset < e.Offset {
			out[e.Partition] = offsetRange{st.Offset, e.Offset}
		}
	})
	return out, nil
}

// readTopic hands every record of ranges to fn, in offset order per
// partition.
func readTopic(ctx context.Context, cfg kafka.Config, logger *slog.Logger, topic string, ranges map[int32]offsetRange, fn func(*kgo.Record)) error {
	if len(ranges) == 0 {
		return nil
	}
	offsets := map[int32]kgo.Offset{}
	left := map[int32]int64{}
	for p, r := range ranges {
		offsets[p] = kgo.NewOffset().At(r.start)
		left[p] = r.end
	}
	opts := slices.Concat(kafka.ClientOpts(cfg, logger), []kgo.Opt{
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.KeepControlRecords(),
	})
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	for len(left) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read %s: %w", topic, err)
		}
		fetches.EachError(func(t string, p int32, err error) {
			logger.WarnContext(ctx, "fetch error", "topic", t, "partition", p, "err", err)
		})
		fetches.EachRecord(func(rec *kgo.Record) {
			end, ok := left[rec.Partition]
			if !ok || rec.Offset >= end {
				return
			}
			if !rec.Attrs.IsControl() {
				fn(rec)
			}
			if rec.Offset == end-1 {
				delete(left, rec.Partition)
			}
		})
	}
	return nil
}
