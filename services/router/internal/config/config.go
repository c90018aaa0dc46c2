// Package config is the router's configuration: Kafka, logging, the
// consumer group and transactional id, the handoff destinations and the
// routing rules. Validate checks everything a handoff depends on, so a
// router that started can never meet a bad destination mid-call.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	pkgconfig "github.com/baton-voice/baton/pkg/config"
	batonv1 "github.com/baton-voice/baton/pkg/events/batonv1"
	"github.com/baton-voice/baton/pkg/kafka"
	"github.com/baton-voice/baton/pkg/observability"
	"github.com/baton-voice/baton/pkg/sipx"
	"github.com/baton-voice/baton/services/router/internal/handoff"
	"github.com/baton-voice/baton/services/router/internal/template"
)

// DefaultAnswerTimeout is a destination's answer timeout when none is set.
const DefaultAnswerTimeout = 30 * time.Second

// MaxAnswerTimeout bounds answer_timeout; longer is surely a typo.
const MaxAnswerTimeout = 10 * time.Minute

// Config is the router's configuration file.
type Config struct {
	Kafka kafka.Config            `yaml:"kafka"`
	Log   observability.LogConfig `yaml:"log"`
	// Group is the consumer group every router instance joins.
	Group string `yaml:"group"`
	// TransactionalID names this instance's transactional producer. It must
	// be unique per instance and stable across its restarts, so a restarted
	// instance fences its own unfinished transaction.
	TransactionalID string `yaml:"transactional_id"`
	// Destinations are where calls can be handed off.
	Destinations []Destination `yaml:"destinations"`
	// Rules are tried in order when a call starts.
	Rules []Rule `yaml:"rules"`
}

// Destination is one handoff destination as configured.
type Destination struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Method is REFER (default), INVITE or BYE, any case.
	Method string `yaml:"method"`
	// Route is a sip: or sips: URI, a tel: URI, or an extension of digits.
	Route string `yaml:"route"`
	// Headers maps an X- header name to its value template.
	Headers map[string]string `yaml:"headers"`
	// Default marks the destination used when none is named; when no
	// destination is marked, the first one is the default.
	Default bool `yaml:"default"`
	// AnswerTimeout bounds how long the destination may take to answer;
	// 0 means DefaultAnswerTimeout.
	AnswerTimeout time.Duration `yaml:"answer_timeout"`
}

// Rule is a routing rule. It has no condition yet, so it matches every
// call; a `when:` expression will be added here.
type Rule struct {
	Name string `yaml:"name"`
	// Handoff names the destination a matching call is handed off to at once.
	Handoff string `yaml:"handoff"`
}

// Default returns the configuration before the file is read. hostname
// makes the default transactional id unique per host.
func Default(hostname string) Config {
	return Config{
		Kafka:           kafka.DefaultConfig(),
		Log:             observability.DefaultLogConfig(),
		Group:           "baton-router",
		TransactionalID: "baton-router-" + hostname,
	}
}

// Load reads the file at path over the defaults and validates the result;
// with an empty path the defaults alone are validated. This is exactly what
// the router's main does.
func Load(path, hostname string) (Config, error) {
	c := Default(hostname)
	if path == "" {
		if err := c.Validate(); err != nil {
			return Config{}, fmt.Errorf("invalid configuration (no --config given): %w", err)
		}
		return c, nil
	}
	if err := pkgconfig.Load(path, &c); err != nil {
		return Config{}, err
	}
	return c, nil
}

var destinationName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Validate returns every problem, each naming its field.
func (c *Config) Validate() error {
	var errs []error
	if err := c.Kafka.Validate(); err != nil {
		errs = append(errs, err)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Log.Level)); err != nil {
		errs = append(errs, pkgconfig.Errorf("log.level", "%q: want debug, info, warn or error", c.Log.Level))
	}
	if f := strings.ToLower(c.Log.Format); f != "json" && f != "text" && f != "" {
		errs = append(errs, pkgconfig.Errorf("log.format", "%q: want json or text", c.Log.Format))
	}
	if strings.TrimSpace(c.Group) == "" {
		errs = append(errs, pkgconfig.Errorf("group", "a consumer group id is required"))
	}
	if strings.TrimSpace(c.TransactionalID) == "" {
		errs = append(errs, pkgconfig.Errorf("transactional_id", "a transactional id, unique per instance, is required"))
	}
	errs = append(errs, c.validateDestinations()...)
	errs = append(errs, c.validateRules()...)
	return errors.Join(errs...)
}

func (c *Config) validateDestinations() []error {
	if len(c.Destinations) == 0 {
		return []error{pkgconfig.Errorf("destinations", "at least one destination is required")}
	}
	var errs []error
	seen := map[string]int{}
	var defaults []int
	for i, d := range c.Destinations {
		path := fmt.Sprintf("destinations[%d]", i)
		switch {
		case d.Name == "":
			errs = append(errs, pkgconfig.Errorf(path+".name", "a name is required"))
		case !destinationName.MatchString(d.Name):
			errs = append(errs, pkgconfig.Errorf(path+".name", "%q: want letters, digits, '_', '-' or '.'", d.Name))
		default:
			key := strings.ToLower(d.Name)
			if j, dup := seen[key]; dup {
				errs = append(errs, pkgconfig.Errorf(path+".name", "duplicate destination %q (also destinations[%d])", d.Name, j))
			} else {
				seen[key] = i
			}
		}
		if d.Default {
			defaults = append(defaults, i)
		}
		method, err := ParseMethod(d.Method)
		if err != nil {
			errs = append(errs, pkgconfig.Errorf(path+".method", "%v", err))
		}
		errs = append(errs, validateRoute(path, d.Route, method)...)
		errs = append(errs, validateHeaders(path, d.Headers)...)
		if d.AnswerTimeout < 0 || d.AnswerTimeout > MaxAnswerTimeout {
			errs = append(errs, pkgconfig.Errorf(path+".answer_timeout", "%v: want a positive duration up to %v", d.AnswerTimeout, MaxAnswerTimeout))
		}
	}
	if len(defaults) > 1 {
		var names []string
		for _, i := range defaults {
			names = append(names, fmt.Sprintf("%q (destinations[%d])", c.Destinations[i].Name, i))
		}
		errs = append(errs, pkgconfig.Errorf(fmt.Sprintf("destinations[%d].default", defaults[1]),
			"more than one default destination: %s; mark exactly one", strings.Join(names, " and ")))
	}
	return errs
}

// ParseMethod reads a method name, any case; empty means REFER.
func ParseMethod(s string) (batonv1.Method, error) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "", "REFER":
		return batonv1.Method_METHOD_REFER, nil
	case "INVITE":
		return batonv1.Method_METHOD_INVITE, nil
	case "BYE":
		return batonv1.Method_METHOD_BYE, nil
	}
	return batonv1.Method_METHOD_UNSPECIFIED, fmt.Errorf("unknown method %q: want REFER, INVITE or BYE", s)
}

// Route kinds.
const (
	routeSIP       = "sip"
	routeTel       = "tel"
	routeExtension = "extension"
)

var (
	hostPattern      = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$|^\[[0-9A-Fa-f:.]+\]$`)
	userPattern      = regexp.MustCompile(`^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+$`)
	paramsPattern    = regexp.MustCompile(`^[A-Za-z0-9\-_.!~*'()%;=\[\]/:&+$]*$`)
	telPattern       = regexp.MustCompile(`^\+?[0-9\-.()]*[0-9][0-9\-.()]*$`)
	extensionPattern = regexp.MustCompile(`^\+?[0-9*#]{1,32}$`)
)

// RouteKind classifies a route: "sip" (sip: or sips: URI), "tel" or
// "extension"; it returns an error for anything else.
func RouteKind(route string) (string, error) {
	scheme, rest, hasScheme := strings.Cut(route, ":")
	switch s := strings.ToLower(scheme); {
	case hasScheme && (s == "sip" || s == "sips"):
		return routeSIP, checkSIPURI(rest)
	case hasScheme && s == "tel":
		number, _, _ := strings.Cut(rest, ";")
		if !telPattern.MatchString(number) {
			return routeTel, fmt.Errorf("tel route %q: want tel:+15551234567", route)
		}
		return routeTel, nil
	case !hasScheme && extensionPattern.MatchString(route):
		return routeExtension, nil
	}
	return "", fmt.Errorf("unsupported route %q: want sip:user@host[:port], sips:user@host, tel:+number, or an extension of digits, '*' and '#'", route)
}

// checkSIPURI checks the part of a sip:/sips: URI after the scheme:
// [user@]host[:port][;params], without URI headers (those come from the
// destination's headers).
func checkSIPURI(rest string) error {
	if strings.ContainsAny(rest, "?<> \t\r\n\x00") {
		return fmt.Errorf("SIP route %q: must be a bare URI: no '?' headers, brackets or spaces", rest)
	}
	hostport := rest
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		user := rest[:at]
		if user == "" || !userPattern.MatchString(user) {
			return fmt.Errorf("SIP route: bad user part %q", user)
		}
		hostport = rest[at+1:]
	}
	hostport, params, _ := strings.Cut(hostport, ";")
	if !paramsPattern.MatchString(params) {
		return fmt.Errorf("SIP route: bad parameters %q", params)
	}
	host, port := hostport, ""
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && !strings.HasSuffix(hostport, "]") {
		host, port = hostport[:i], hostport[i+1:]
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("SIP route: bad port %q", port)
		}
	}
	if host == "" || !hostPattern.MatchString(host) {
		return fmt.Errorf("SIP route: bad host %q", host)
	}
	return nil
}

func validateRoute(path, route string, method batonv1.Method) []error {
	if route == "" {
		if method == batonv1.Method_METHOD_BYE {
			return nil // BYE hands the call back to the SBC; no target needed.
		}
		return []error{pkgconfig.Errorf(path+".route", "a route is required for %s", methodName(method))}
	}
	kind, err := RouteKind(route)
	if err != nil {
		return []error{pkgconfig.Errorf(path+".route", "%v", err)}
	}
	if method == batonv1.Method_METHOD_REFER && kind != routeSIP {
		return []error{pkgconfig.Errorf(path+".route", "%q: REFER needs a sip: or sips: route, because the headers ride in the Refer-To URI; use INVITE for %s routes", route, kind)}
	}
	return nil
}

func methodName(m batonv1.Method) string {
	return strings.TrimPrefix(m.String(), "METHOD_")
}

func validateHeaders(path string, headers map[string]string) []error {
	var errs []error
	seen := map[string]string{}
	for _, name := range sortedKeys(headers) {
		hpath := path + ".headers." + name
		if err := sipx.ValidateCustom(name, ""); err != nil {
			errs = append(errs, pkgconfig.Errorf(hpath, "%v", err))
			continue
		}
		if other, dup := seen[strings.ToLower(name)]; dup {
			errs = append(errs, pkgconfig.Errorf(hpath, "header %s repeats %s (names ignore case)", name, other))
			continue
		}
		seen[strings.ToLower(name)] = name
		tpl, err := template.Parse(headers[name])
		if err != nil {
			errs = append(errs, pkgconfig.Errorf(hpath, "%v", err))
			continue
		}
		// The literal text alone must already be a valid header value.
		literal, _ := tpl.Render(template.NewScope())
		if err := sipx.ValidateCustom(name, literal); err != nil {
			errs = append(errs, pkgconfig.Errorf(hpath, "%v", err))
		}
	}
	return errs
}

func (c *Config) validateRules() []error {
	var errs []error
	names := map[string]int{}
	for i, r := range c.Rules {
		path := fmt.Sprintf("rules[%d]", i)
		if r.Name == "" {
			errs = append(errs, pkgconfig.Errorf(path+".name", "a name is required"))
		} else if j, dup := names[r.Name]; dup {
			errs = append(errs, pkgconfig.Errorf(path+".name", "duplicate rule %q (also rules[%d])", r.Name, j))
		} else {
			names[r.Name] = i
		}
		switch {
		case r.Handoff == "":
			errs = append(errs, pkgconfig.Errorf(path+".handoff", "a destination name is required"))
		case c.destination(r.Handoff) < 0:
			errs = append(errs, pkgconfig.Errorf(path+".handoff", "unknown destination %q", r.Handoff))
		}
		if i > 0 {
			// Without conditions the first rule matches every call.
			errs = append(errs, pkgconfig.Errorf(path, "unreachable: rule %q before it matches every call", c.Rules[0].Name))
		}
	}
	return errs
}

// destination returns the index of the destination named name, or -1.
func (c *Config) destination(name string) int {
	for i, d := range c.Destinations {
		if d.Name == name {
			return i
		}
	}
	return -1
}

// DefaultDestination names the default: the one marked, else the first.
func (c *Config) DefaultDestination() string {
	for _, d := range c.Destinations {
		if d.Default {
			return d.Name
		}
	}
	if len(c.Destinations) == 0 {
		return ""
	}
	return c.Destinations[0].Name
}

// Table turns a validated configuration into the router's decision table.
func (c *Config) Table() (handoff.Table, error) {
	t := handoff.Table{Destinations: map[string]handoff.Destination{}, Default: c.DefaultDestination()}
	for i, d := range c.Destinations {
		method, err := ParseMethod(d.Method)
		if err != nil {
			return handoff.Table{}, fmt.Errorf("destinations[%d].method: %w", i, err)
		}
		timeout := d.AnswerTimeout
		if timeout == 0 {
			timeout = DefaultAnswerTimeout
		}
		hd := handoff.Destination{Name: d.Name, Method: method, Route: d.Route, AnswerTimeout: timeout}
		for _, name := range sortedKeys(d.Headers) {
			tpl, err := template.Parse(d.Headers[name])
			if err != nil {
				return handoff.Table{}, fmt.Errorf("destinations[%d].headers.%s: %w", i, name, err)
			}
			hd.Headers = append(hd.Headers, handoff.Header{Name: name, Value: tpl})
		}
		t.Destinations[d.Name] = hd
	}
	for _, r := range c.Rules {
		t.Rules = append(t.Rules, handoff.Rule{Name: r.Name, Destination: r.Handoff})
	}
	return t, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
