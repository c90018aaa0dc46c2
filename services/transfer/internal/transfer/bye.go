package transfer

import (
	"context"

	"github.com/baton-voice/baton/services/transfer/internal/request"
)

// bye ends the agent leg with the command's headers so the SBC takes the
// call back: one BYE in the caller's dialog, whose final response is the
// outcome.
func (e *execution) bye(ctx context.Context) {
	req, err := request.Bye(e.cmd.GetDialog(), e.cmd.GetAttempt(), e.cmd.GetHeaders())
	if err != nil {
		e.notSent(ctx, "BYE", requestReason(err), err)
		return
	}
	if e.cseqFloor > req.CSeq().SeqNo { // a fallback after the REFERs
		req.CSeq().SeqNo = e.cseqFloor
	}
	res, ok := e.send(ctx, req)
	if !ok {
		return
	}
	if !res.IsSuccess() {
		e.publish(ctx, failed(res.StatusCode, res.Reason, "BYE rejected"))
		return
	}
	e.publish(ctx, step{status: succeeded, code: res.StatusCode, reason: res.Reason})
}
