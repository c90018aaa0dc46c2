package sipx

// Refusal is the answer to a request whose method a user agent does not
// serve (RFC 3261 8.2.1): 405 Method Not Allowed for a method SIP or its
// extensions define, 501 Not Implemented for one it does not know. Either
// response must carry the agent's Allow.
func Refusal(method string) (code int, reason string) {
	switch method {
	case "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "SUBSCRIBE", "NOTIFY", "MESSAGE", "REFER",
		"INFO", "UPDATE", "PRACK", "PUBLISH":
		return 405, "Method Not Allowed"
	}
	return 501, "Not Implemented"
}
