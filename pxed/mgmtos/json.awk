# json.awk: flatten one JSON document (stdin) into lines "path<TAB>value".
#
#   {"ID":3,"Images":[{"UUID":"u","Update":true}],"M":{"V":null}}
#   ->  ID	3
#       Images.0.UUID	u
#       Images.0.Update	true
#       M.V	null
#
# Strings are unescaped (\" \\ \/ \b \f \t); \n and \r stay escaped so that
# every value fits on one line, \uXXXX stays as written.  Numbers, true,
# false and null are printed as written.  Empty objects and arrays print
# nothing.  Malformed input: a message on stderr and exit status 2.
# Written for busybox awk (and works with gawk/mawk).

{ s = s $0 "\n" }

END {
	n = length(s); i = 1
	value("")
	ws()
	if (i <= n) fail("trailing data")
	exit 0
}

function fail(m) { printf "json.awk: %s at offset %d\n", m, i > "/dev/stderr"; failed = 1; exit 2 }

function ws(   c) {
	while (i <= n) {
		c = substr(s, i, 1)
		if (c != " " && c != "\t" && c != "\n" && c != "\r") return
		i++
	}
}

function value(path,   c, lit) {
	ws()
	if (i > n) fail("unexpected end")
	c = substr(s, i, 1)
	if (c == "{") obj(path)
	else if (c == "[") arr(path)
	else if (c == "\"") emit(path, str())
	else {
		lit = ""
		while (i <= n && substr(s, i, 1) ~ /[-+.0-9a-zA-Z]/) { lit = lit substr(s, i, 1); i++ }
		if (lit == "") fail("unexpected character '" c "'")
		emit(path, lit)
	}
}

function obj(path,   c, k) {
	i++; ws()
	if (substr(s, i, 1) == "}") { i++; return }
	while (1) {
		ws()
		if (substr(s, i, 1) != "\"") fail("expected a key")
		k = str(); ws()
		if (substr(s, i, 1) != ":") fail("expected ':'")
		i++
		value(path == "" ? k : path "." k)
		ws(); c = substr(s, i, 1); i++
		if (c == "}") return
		if (c != ",") fail("expected ',' or '}'")
	}
}

function arr(path,   c, k) {
	i++; ws()
	if (substr(s, i, 1) == "]") { i++; return }
	for (k = 0; ; k++) {
		value(path == "" ? k : path "." k)
		ws(); c = substr(s, i, 1); i++
		if (c == "]") return
		if (c != ",") fail("expected ',' or ']'")
	}
}

function str(   out, c, e, rest) {
	i++
	out = ""
	while (1) {
		if (i > n) fail("unterminated string")
		rest = substr(s, i)
		if (match(rest, /^[^"\\]+/)) { out = out substr(rest, 1, RLENGTH); i += RLENGTH; continue }
		c = substr(s, i, 1)
		if (c == "\"") { i++; return out }
		# a backslash escape
		e = substr(s, i + 1, 1); i += 2
		if (e == "\"" || e == "\\" || e == "/") out = out e
		else if (e == "t") out = out " "
		else if (e == "b" || e == "f") out = out
		else if (e == "n" || e == "r") out = out "\\" e
		else if (e == "u") { out = out "\\u" substr(s, i, 4); i += 4 }
		else fail("bad escape")
	}
}

function emit(path, v) { printf "%s\t%s\n", path, v }
