module github.com/baton-voice/baton/e2e

go 1.26

require github.com/baton-voice/baton/pkg v0.0.0

replace github.com/baton-voice/baton/pkg => ../pkg
