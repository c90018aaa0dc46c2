module github.com/baton-voice/baton/schemas

go 1.26.0
