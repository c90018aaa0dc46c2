package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
)

func parse(t *testing.T, doc string) (Config, error) {
	t.Helper()
	c := Default("host-1")
	err := pkgconfig.Parse("router.yaml", []byte(doc), &c)
	return c, err
}

func TestValidateErrorsNameFileLineAndField(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string
	}{
		{
			name: "no destinations",
			doc:  "group: g\ndestinations: []\n",
			want: []string{"router.yaml:2: destinations: at least one destination is required"},
		},
		{
			name: "destinations key absent",
			doc:  "group: g\n",
			want: []string{"router.yaml: destinations: at least one destination is required"},
		},
		{
			name: "unknown method",
			doc: `destinations:
  - name: a
    route: sip:a@example.com
  - name: b
    method: TELEPORT
    route: sip:b@example.com
`,
			want: []string{`router.yaml:5: destinations[1].method: unknown method "TELEPORT": want REFER, INVITE or BYE`},
		},
		{
			name: "two defaults name both",
			doc: `destinations:
  - name: sales
    route: sip:sales@example.com
    default: true
  - name: support
    route: sip:support@example.com
    default: true
`,
			want: []string{`router.yaml:7: destinations[1].default: more than one default destination: "sales" (destinations[0]) and "support" (destinations[1]); mark exactly one`},
		},
		{
			name: "duplicate names",
			doc: `destinations:
  - name: support
    route: sip:a@example.com
  - name: Support
    route: sip:b@example.com
`,
			want: []string{`router.yaml:4: destinations[1].name: duplicate destination "Support" (also destinations[0])`},
		},
		{
			name: "missing and bad names",
			doc: `destinations:
  - route: sip:a@example.com
  - name: "has space"
    route: sip:b@example.com
`,
			want: []string{
				`router.yaml:2: destinations[0].name: a name is required`,
				`router.yaml:3: destinations[1].name: "has space": want letters, digits`,
			},
		},
		{
			name: "refer to tel",
			doc: `destinations:
  - name: pstn
    method: refer
    route: tel:+15551234567
`,
			want: []string{`router.yaml:4: destinations[0].route: "tel:+15551234567": REFER needs a sip: or sips: route, because the headers ride in the Refer-To URI`},
		},
		{
			name: "refer by default to an extension",
			doc: `destinations:
  - name: desk
    route: "4001"
`,
			want: []string{`router.yaml:3: destinations[0].route: "4001": REFER needs a sip: or sips: route`},
		},
		{
			name: "bad routes",
			doc: `destinations:
  - name: a
    route: http://example.com
  - name: b
    route: sip:b@example.com:99999
  - name: c
    route: sip:c@example.com?X-Foo=1
  - name: d
    method: INVITE
    route: tel:abc
  - name: e
    route: "sip:@example.com"
  - name: f
    method: INVITE
`,
			want: []string{
				`router.yaml:3: destinations[0].route: unsupported route "http://example.com"`,
				`router.yaml:5: destinations[1].route: SIP route: bad port "99999"`,
				`router.yaml:7: destinations[2].route: SIP route "c@example.com?X-Foo=1": must be a bare URI`,
				`router.yaml:10: destinations[3].route: tel route "tel:abc"`,
				`router.yaml:12: destinations[4].route: SIP route: bad user part ""`,
				`router.yaml:13: destinations[5].route: a route is required for INVITE`,
			},
		},
		{
			name: "bad headers",
			doc: `destinations:
  - name: a
    route: sip:a@example.com
    headers:
      Customer-Id: "{customer_id}"
      X-Bad Name: "x"
      X-Open: "{customer_id"
      X-Injected: "a\r\nContact: evil"
      X-Dup: "1"
      X-DUP: "2"
      x-lower: "3"
`,
			want: []string{
				`router.yaml:5: destinations[0].headers.Customer-Id: invalid custom header name: "Customer-Id"`,
				`router.yaml:6: destinations[0].headers.X-Bad Name: invalid custom header name`,
				`router.yaml:7: destinations[0].headers.X-Open: template syntax: unclosed '{' at byte 0`,
				`router.yaml:8: destinations[0].headers.X-Injected: header X-Injected: invalid header value: control character '\r'`,
				`router.yaml:9: destinations[0].headers.X-Dup: header X-Dup repeats X-DUP (names ignore case)`,
				`router.yaml:11: destinations[0].headers.x-lower: invalid custom header name`,
			},
		},
		{
			name: "answer timeout out of range",
			doc: `destinations:
  - name: a
    route: sip:a@example.com
    answer_timeout: -1s
  - name: b
    route: sip:b@example.com
    answer_timeout: 2h
`,
			want: []string{
				`router.yaml:4: destinations[0].answer_timeout: -1s: want a positive duration up to 10m0s`,
				`router.yaml:7: destinations[1].answer_timeout: 2h0m0s`,
			},
		},
		{
			name: "rules",
			doc: `destinations:
  - name: support
    route: sip:support@example.com
rules:
  - name: everyone
    handoff: nowhere
  - name: everyone
    handoff: support
  - handoff: ""
`,
			want: []string{
				`router.yaml:6: rules[0].handoff: unknown destination "nowhere"`,
				`router.yaml:7: rules[1].name: duplicate rule "everyone" (also rules[0])`,
				`router.yaml:7: rules[1]: unreachable: rule "everyone" before it matches every call`,
				`router.yaml:9: rules[2].name: a name is required`,
				`router.yaml:9: rules[2]: unreachable`,
			},
		},
		{
			name: "reserved rule name",
			doc: `destinations:
  - name: support
    route: sip:support@example.com
rules:
  - name: (none)
    handoff: support
`,
			want: []string{
				`router.yaml:5: rules[0].name: "(none)" is reserved`,
			},
		},
		{
			name: "group, transactional id and log",
			doc: `group: ""
transactional_id: ""
log:
  level: loud
  format: xml
destinations:
  - name: a
    route: sip:a@example.com
`,
			want: []string{
				`router.yaml:1: group: a consumer group id is required`,
				`router.yaml:2: transactional_id: a transactional id, unique per instance, is required`,
				`router.yaml:4: log.level: "loud"`,
				`router.yaml:5: log.format: "xml"`,
			},
		},
		{
			name: "kafka section",
			doc: `kafka:
  brokers: []
destinations:
  - name: a
    route: sip:a@example.com
`,
			want: []string{`router.yaml:2: kafka.brokers: at least one broker is required`},
		},
		{
			name: "unknown field",
			doc: `destinations:
  - name: a
    route: sip:a@example.com
    when: caller_number == "1"
`,
			want: []string{`line 4: field when not found`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.doc)
			require.Error(t, err)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
			var inv *pkgconfig.InvalidError
			if strings.Contains(tc.want[0], "line 4: field") {
				return
			}
			require.ErrorAs(t, err, &inv)
			require.Len(t, inv.Problems, len(tc.want), "exactly the expected problems: %v", inv.Problems)
		})
	}
}

func TestValidRoutes(t *testing.T) {
	for _, tc := range []struct {
		route, method string
	}{
		{"sip:support@example.com", "REFER"},
		{"sip:support@127.0.0.1:5090", "refer"},
		{"sips:support@pbx.example.com:5061", "Refer"},
		{"sip:+15551234567@trunk.example.com", ""},
		{"sip:+15551234567@trunk.example.com;user=phone", ""},
		{"sip:agent@[2001:db8::1]:5060", ""},
		{"SIP:pbx.example.com", ""},
		{"tel:+15551234567", "INVITE"},
		{"tel:+1-555-123-4567", "invite"},
		{"4001", "INVITE"},
		{"*72#", "INVITE"},
		{"", "BYE"},
		{"sip:sbc@example.com", "bye"},
	} {
		t.Run(tc.route+"/"+tc.method, func(t *testing.T) {
			doc := "destinations:\n  - name: a\n    method: \"" + tc.method + "\"\n    route: \"" + tc.route + "\"\n"
			_, err := parse(t, doc)
			require.NoError(t, err)
		})
	}
}

func TestDefaultsAndTable(t *testing.T) {
	c, err := parse(t, `destinations:
  - name: support
    route: sip:support@example.com
    headers:
      X-Intent: "{intent}"
      X-Baton-Call-Id: "$call_id"
  - name: sales
    method: invite
    route: tel:+15551234567
    answer_timeout: 12s
rules:
  - name: everyone
    handoff: sales
`)
	require.NoError(t, err)
	require.Equal(t, "baton-router", c.Group)
	require.Equal(t, "baton-router-host-1", c.TransactionalID)
	require.Equal(t, "support", c.DefaultDestination(), "no destination marked: the first is the default")

	tbl, err := c.Table()
	require.NoError(t, err)
	require.Equal(t, "support", tbl.Default)
	support := tbl.Destinations["support"]
	require.Equal(t, batonv1.Method_METHOD_REFER, support.Method)
	require.Equal(t, DefaultAnswerTimeout, support.AnswerTimeout)
	require.Len(t, support.Headers, 2)
	require.Equal(t, "X-Baton-Call-Id", support.Headers[0].Name, "headers are sorted by name")
	require.Equal(t, "X-Intent", support.Headers[1].Name)
	sales := tbl.Destinations["sales"]
	require.Equal(t, batonv1.Method_METHOD_INVITE, sales.Method)
	require.Equal(t, 12*time.Second, sales.AnswerTimeout)
	require.Len(t, tbl.Rules, 1)
	require.Equal(t, "sales", tbl.Rules[0].Destination)
}

func TestMarkedDefaultWins(t *testing.T) {
	c, err := parse(t, `destinations:
  - name: support
    route: sip:support@example.com
  - name: sales
    route: sip:sales@example.com
    default: true
`)
	require.NoError(t, err)
	require.Equal(t, "sales", c.DefaultDestination())
}

func TestLoad(t *testing.T) {
	_, err := Load("", "h")
	require.ErrorContains(t, err, "destinations: at least one destination is required")

	path := filepath.Join(t.TempDir(), "router.yaml")
	require.NoError(t, os.WriteFile(path, []byte("destinations:\n  - name: a\n    route: sip:a@example.com\n"), 0o600))
	c, err := Load(path, "h")
	require.NoError(t, err)
	require.Equal(t, "baton-router-h", c.TransactionalID)

	_, err = Load(filepath.Join(t.TempDir(), "missing.yaml"), "h")
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestExampleConfigIsValid(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "router.example.yaml"), "h")
	require.NoError(t, err)
	tbl, err := c.Table()
	require.NoError(t, err)
	require.Equal(t, "support", tbl.Default)
	require.Equal(t, batonv1.Method_METHOD_REFER, tbl.Destinations["support"].Method)
	require.Equal(t, "sip:support@127.0.0.1:5090", tbl.Destinations["support"].Route)
	require.Equal(t, "handoff-everyone", tbl.Rules[len(tbl.Rules)-1].Name)
	require.Equal(t, []string{"support"}, tbl.Destinations["billing"].Fallback)
}

func TestSkipWhenDownReachesTheTable(t *testing.T) {
	c, err := parse(t, `destinations:
  - name: a
    route: sip:a@pbx.example.com
    skip_when_down: true
    fallback: [b]
  - name: b
    route: sip:b@pbx.example.com
`)
	require.NoError(t, err)
	table, err := c.Table()
	require.NoError(t, err)
	require.True(t, table.Destinations["a"].SkipWhenDown)
	require.False(t, table.Destinations["b"].SkipWhenDown, "off by default")
}
