// Package schemas embeds Baton's ClickHouse migrations so the analytics
// service applies exactly the DDL in this directory. The Protobuf contract
// lives next to it in baton/v1; its generated Go is in pkg/events.
package schemas

import "embed"

// ClickHouse holds the migrations, clickhouse/NNNN_name.sql, applied in
// file-name order, each once.
//
//go:embed clickhouse/*.sql
var ClickHouse embed.FS
