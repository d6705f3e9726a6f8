#!/usr/bin/awk -f
# A tiny reader for the subset of Kconfig this project uses (config, bool,
# int, default, range, `depends on` one earlier bool), so that configuring and building need no Kconfig tool.
#
#   awk -v mode=config -f kconfig.awk Kconfig .config   -> full .config
#   awk -v mode=header -f kconfig.awk Kconfig .config   -> config.h
#   awk -v mode=save   -f kconfig.awk Kconfig .config   -> minimal defconfig
#
# Pass /dev/null as .config for the defaults. Unknown symbols and values of
# the wrong type or out of range are reported and replaced by the default.

function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }
function fail(msg) { print "kconfig: error: " msg > "/dev/stderr"; err = 1 }
function warn(msg) { print "kconfig: warning: " msg > "/dev/stderr" }

function valid(sym, v) {
	if (type[sym] == "bool")
		return v == "y" || v == "n"
	if (type[sym] == "int") {
		if (v !~ /^-?[0-9]+$/)
			return 0
		if (sym in lo && (v + 0 < lo[sym] || v + 0 > hi[sym]))
			return 0
		return 1
	}
	return 0
}

FNR == NR {
	line = trim($0)
	if (line ~ /^config[ \t]+[A-Za-z0-9_]+$/) {
		cur = trim(substr(line, 7))
		order[++nsym] = cur
		type[cur] = ""
		next
	}
	if (line ~ /^(menu|endmenu|mainmenu|comment|if|endif|source|choice|endchoice)([ \t]|$)/) {
		cur = ""
		next
	}
	if (cur == "")
		next
	if (line ~ /^bool([ \t]|$)/)
		type[cur] = "bool"
	else if (line ~ /^int([ \t]|$)/)
		type[cur] = "int"
	else if (line ~ /^default[ \t]/)
		def[cur] = trim(substr(line, 8))
	else if (line ~ /^depends[ \t]+on[ \t]+[A-Za-z0-9_]+$/) {
		dep[cur] = line
		sub(/^depends[ \t]+on[ \t]+/, "", dep[cur])
	} else if (line ~ /^range[ \t]/) {
		split(trim(substr(line, 6)), r, /[ \t]+/)
		lo[cur] = r[1] + 0
		hi[cur] = r[2] + 0
	}
	next
}

# Second file: an existing .config.
{
	line = trim($0)
	if (match(line, /^# CONFIG_[A-Za-z0-9_]+ is not set$/)) {
		sym = substr(line, 10)
		sub(/ is not set$/, "", sym)
		user[sym] = "n"
	} else if (line ~ /^CONFIG_[A-Za-z0-9_]+=/) {
		eq = index(line, "=")
		sym = substr(line, 8, eq - 8)
		v = substr(line, eq + 1)
		gsub(/^"|"$/, "", v)
		user[sym] = v
	} else if (line != "" && line !~ /^#/) {
		warn(FILENAME ":" FNR ": ignoring '" line "'")
	}
}

END {
	for (i = 1; i <= nsym; i++) {
		s = order[i]
		if (type[s] == "")
			fail("Kconfig: " s " has no type")
		if (!valid(s, def[s]))
			fail("Kconfig: " s " has an invalid default '" def[s] "'")
		known[s] = 1
	}
	for (s in user) {
		if (!(s in known)) {
			warn("unknown symbol CONFIG_" s " ignored")
			continue
		}
		if (!valid(s, user[s])) {
			warn("CONFIG_" s "=" user[s] " is invalid, using the default " def[s])
			continue
		}
		val[s] = user[s]
	}
	for (i = 1; i <= nsym; i++)
		if (!(order[i] in val))
			val[order[i]] = def[order[i]]
	for (i = 1; i <= nsym; i++)
		if (order[i] in dep && val[dep[order[i]]] != "y") {
			val[order[i]] = "n"
			forced[order[i]] = 1
		}
	if (val["VUV_DECODER"] == "n" && val["VUV_ENCODER"] == "n")
		fail("at least one of CONFIG_VUV_DECODER and CONFIG_VUV_ENCODER must be y")
	if (err)
		exit 1

	if (mode == "header") {
		print "/* Generated from .config by scripts/kconfig.awk: do not edit. */"
		print "#ifndef VUV_CONFIG_H"
		print "#define VUV_CONFIG_H"
		for (i = 1; i <= nsym; i++) {
			s = order[i]
			v = val[s]
			if (type[s] == "bool")
				v = (v == "y") ? 1 : 0
			print "#define CONFIG_" s " " v
		}
		print "#endif"
	} else if (mode == "config" || mode == "save") {
		print "# vhost-user-video configuration"
		for (i = 1; i <= nsym; i++) {
			s = order[i]
			if (mode == "save" && (val[s] == def[s] || s in forced))
				continue
			if (type[s] == "bool" && val[s] == "n")
				print "# CONFIG_" s " is not set"
			else
				print "CONFIG_" s "=" val[s]
		}
	} else {
		fail("unknown mode '" mode "'")
		exit 1
	}
}
