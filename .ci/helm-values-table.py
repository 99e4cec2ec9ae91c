"""Prints the values table of the chatbot chart's README from values.yaml (helm-docs style: a
`# -- ` comment, continued by `# ` lines, documents the key below it).

usage: python3 .ci/helm-values-table.py examples/chatbot/deploy/helm/chatbot/values.yaml
.ci/validate-manifests fails when README.md's table (between the values-table markers) differs.
"""
import re, sys
lines=open(sys.argv[1]).read().split('\n')
stack=[]; desc=None; rows=[]
for line in lines:
    if not line.strip(): continue
    m=re.match(r'^(\s*)# -- (.*)$', line)
    if m: desc=[m.group(2)]; continue
    m=re.match(r'^(\s*)# (.*)$', line)
    if m and desc is not None:
        desc.append(m.group(2)); continue
    if m: continue
    m=re.match(r'^(\s*)([A-Za-z][A-Za-z0-9_]*):\s*(.*)$', line)
    if not m: continue
    ind=len(m.group(1))//2
    stack=stack[:ind]+[m.group(2)]
    if desc:
        val=m.group(3) or '(see values.yaml)'
        rows.append(('.'.join(stack), val, ' '.join(desc)))
        desc=None
print('| key | default | description |')
print('| --- | --- | --- |')
bar='\\|'
for k,v,d in rows:
    print('| `%s` | `%s` | %s |' % (k, v, d.replace('|', bar)))
