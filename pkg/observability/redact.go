package observability

import "net/url"

// RedactURL is u as logs and events may show it: scheme, host and path,
// without user info, query or fragment (a signed URL's token, a key in a
// query parameter). An unparsable u shows as "(unparsable URL)".
func RedactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	r := url.URL{Scheme: p.Scheme, Host: p.Host, Path: p.Path, RawPath: p.RawPath}
	return r.String()
}
