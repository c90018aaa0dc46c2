// Package deploycheck holds tests that keep deploy/ honest: every manifest
// parses, every file a manifest mounts exists, and the Kamailio example
// passes Kamailio's own config check.
package deploycheck
