package uac

// logsPerSecond bounds the records a stranger can make transfer write:
// dropped datagrams, and sipgo's errors and records that carried a packet
// (observability.RateLog, observability.QuietSIP).
const logsPerSecond = 10
