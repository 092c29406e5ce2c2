# Joins consecutive one-line `INSERT INTO t (cols) values (...);` statements with the same table
# and columns into multi-row INSERTs of up to about 1 MB. Zabbix's data.sql is 130 000 one-row
# INSERTs (35 MB, mostly templates); joined it loads several times faster. Every other line
# (and any INSERT not on one line) passes through unchanged.
function flush() { if (n > 0) { print stmt ";"; n = 0 } }
/^INSERT INTO / {
  i = index($0, ") values (")
  if (i == 0 || substr($0, length($0)) != ";") { flush(); print; next }
  p = substr($0, 1, i + 8)
  t = substr($0, i + 9, length($0) - i - 9)
  if (n > 0 && p == prefix && size < 1000000) { stmt = stmt "," t; size += length(t); n++; next }
  flush(); prefix = p; stmt = p t; size = length(t); n = 1; next
}
{ flush(); print }
END { flush() }
