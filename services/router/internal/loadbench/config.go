package loadbench

import (
	"fmt"
	"strings"

	"github.com/baton-voice/baton/pkg/kafka"
)

// RouterConfig is a router YAML config with n CEL rules (n ≥ 1). Every
// rule reads the caller number and the reason; only the last one matches
// a request with Reason, so each HandoffRequested evaluates all n, and
// none matches a call start (reason ""), so seeding hands nothing off.
// The matching rule hands off to a REFER destination with three header
// templates.
func RouterConfig(k kafka.Config, group, transactionalID, logLevel string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `kafka:
  brokers: [%s]
  partitions: %d
  topics:
    calls: %s
    handoffs: %s
    transfers: %s
log:
  level: %s
group: %s
transactional_id: %s
reload:
  poll_interval: 0s
destinations:
  - name: support
    route: sip:support@127.0.0.1:5090
    default: true
    headers:
      X-Customer-Id: "{Customer-Id}"
      X-Intent: "{intent}"
      X-Baton-Call-Id: "$call_id"
  - name: billing
    method: INVITE
    route: sip:+15550002222@127.0.0.1:5090
    fallback: [support]
rules:
`, quoted(k.Brokers), k.Partitions, k.Topics.Calls, k.Topics.Handoffs, k.Topics.Transfers,
		logLevel, group, transactionalID)
	for i := range n - 1 {
		dest := "billing"
		if i%2 == 0 {
			dest = "support"
		}
		fmt.Fprintf(&b, "  - name: r%03d\n    when: caller_number.startsWith('+1555') && reason == 'intent_%03d'\n    handoff: %s\n", i, i, dest)
	}
	fmt.Fprintf(&b, "  - name: agent-request\n    when: caller_number.startsWith('+1555') && reason == '%s'\n    handoff: support\n", Reason)
	return b.String()
}

func quoted(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
