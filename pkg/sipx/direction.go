package sipx

import "strings"

// AnswerDirection is the SDP direction attribute an answer gives to an
// offer's (RFC 3264 6.1): a hold offer (sendonly) is answered recvonly,
// never sendrecv; an offer without one (or with an unknown one) is
// sendrecv.
func AnswerDirection(offer string) string {
	switch strings.ToLower(offer) {
	case "sendonly":
		return "recvonly"
	case "recvonly":
		return "sendonly"
	case "inactive":
		return "inactive"
	default:
		return "sendrecv"
	}
}
