#!/usr/bin/python3
# Run a recipe's do_configure, do_compile and do_install the way bitbake
# would, without bitbake (Debian has none): read the .bb, expand ${VAR} and
# ${@bb.utils.contains(...)} from its assignments and the environment given
# on the command line (VAR=value ...), define oe_runmake as bitbake does
# (make ${PARALLEL_MAKE} ${EXTRA_OEMAKE} "$@") and run each task with sh -e
# in ${B}. A small subset of bitbake: what this recipe uses.
import re
import subprocess
import sys

recipe, args = sys.argv[1], sys.argv[2:]
env = {}
flags, funcs, text = {}, {}, open(recipe).read().replace('\\\n', ' ')
lines = text.split('\n')
i = 0
while i < len(lines):
    line = lines[i]
    m = re.match(r'^(do_\w+)\(\)\s*\{$', line)
    if m:
        body = []
        i += 1
        while lines[i] != '}':
            body.append(lines[i])
            i += 1
        funcs[m.group(1)] = '\n'.join(body)
    m = re.match(r'^([\w:${}-]+)\[(\w+)\]\s*=\s*"(.*)"$', line)
    if m:
        flags.setdefault(m.group(1), {})[m.group(2)] = m.group(3)
    else:
        m = re.match(r'^([\w:${}-]+)\s*(\?\?=|\?=|=|:=)\s*"(.*)"$', line)
        if m and m.group(2) in ('=', ':='):
            env[m.group(1)] = m.group(3)
        elif m:
            env.setdefault(m.group(1), m.group(3))
    i += 1
# command-line values win over the recipe's, as local.conf's would
env.update(dict(a.split('=', 1) for a in args))


class D:
    def getVar(self, v):
        return expand(env.get(v, ''))


def contains(var, item, yes, no, d):
    return yes if item in d.getVar(var).split() else no


def expand(s, depth=0):
    if depth > 20:
        return s
    s2 = re.sub(r'\$\{@(.*?)\}',
                lambda m: str(eval(m.group(1), {'bb': type('bb', (), {'utils': type('u', (), {'contains': staticmethod(contains)})}), 'd': D()})), s)
    s2 = re.sub(r'\$\{([\w:-]+)\}', lambda m: env.get(m.group(1), m.group(0)), s2)
    return s2 if s2 == s else expand(s2, depth + 1)


# PACKAGECONFIG: enable or disable argument of every flag
pc = expand(env.get('PACKAGECONFIG', '')).split()
env['PACKAGECONFIG_CONFARGS'] = ' '.join(
    v.split(',')[0 if k in pc else 1] for k, v in sorted(flags.get('PACKAGECONFIG', {}).items()))
for task in ('do_configure', 'do_compile', 'do_install'):
    script = 'oe_runmake() { make %s %s "$@"; }\ncd %s\n%s\n' % (
        expand(env.get('PARALLEL_MAKE', '')), expand(env['EXTRA_OEMAKE']), expand('${B}'),
        expand(funcs[task]))
    print('--- %s' % task, flush=True)
    r = subprocess.run(['sh', '-e', '-x', '-c', script])
    if r.returncode:
        print('%s failed with %d' % (task, r.returncode))
        sys.exit(1)
