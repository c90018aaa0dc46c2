package observability

import "testing"

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"wss://user:pw@bot.example.com:8443/media?token=s3cret#frag": "wss://bot.example.com:8443/media",
		"https://tts.example.com/a%2Fb.wav?sig=x":                    "https://tts.example.com/a%2Fb.wav",
		"ws://127.0.0.1:9000/":                                       "ws://127.0.0.1:9000/",
		"http://[::1]/x\x7f":                                         "(unparsable URL)",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
