#!/usr/bin/env python3
"""A rolling upgrade by hand: a node of the previous version publishes (1-event and
150-event requests, so both its synchronous commits and its commits without the flush plus
a mark), a node of this version starts on the same database meanwhile (applying its
migrations under the old node's load), and both publish to the same topic at once. Then it
prints what a person checks: offsets contiguous (rows = max offset, from 1), and the
reservation, the mark and the previous version's mark (`topics.last_offset`, the view
`topic_marks`) all at the last offset.

Usage: upgrade_check.py OLD_EVENTRELAY NEW_EVENTRELAY   (needs h2load, psql, curl)
"""
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

admin = "postgres://postgres@127.0.0.1:5432/postgres"
old_bin, new_bin = sys.argv[1], sys.argv[2]
wd = tempfile.mkdtemp(prefix="er-upgrade-")
old = bench.Node("old", old_bin, admin, wd)
old.create_topic("up")
def h2(node, events, secs, c=2, m=5):
    body=os.path.join(wd,"b-%s-%d.bin"%(node.label,events))
    open(body,"wb").write(bench.publish_body("up",events))
    return subprocess.Popen(["h2load","-c",str(c),"-m",str(m),"-D",str(secs),"-d",body,"-H","content-type: application/grpc","-H","te: trailers","-H","authorization: Bearer "+old.token,"http://127.0.0.1:%d/eventrelay.EventRelay/PublishEvents"%node.grpc],stdout=subprocess.PIPE,stderr=subprocess.STDOUT,text=True)
p=[h2(old,1,4),h2(old,150,4)]
time.sleep(1.5)
# a new node on the same database while the old one publishes: migration 0010 applies now
new=bench.Node.__new__(bench.Node)
new.label="new"; new.binary=new_bin; new.db=old.db; new.url=old.url
new.grpc=bench.free_port(); new.http=bench.free_port()
env=dict(old.env); env.update(ER_GRPC_ADDR="127.0.0.1:%d"%new.grpc, ER_HTTP_ADDR="127.0.0.1:%d"%new.http, ER_NODE_NAME="h2load-new")
new.log=open(os.path.join(wd,"node-new.log"),"w")
new.proc=subprocess.Popen([new.binary],env=env,stdout=new.log,stderr=subprocess.STDOUT)
import urllib.request
for _ in range(100):
    try:
        if urllib.request.urlopen("http://127.0.0.1:%d/readyz"%new.http,timeout=1).status==200: break
    except OSError: pass
    time.sleep(0.2)
new.token=old.token
p+=[h2(new,1,4),h2(new,150,4),h2(old,1,3),h2(old,150,3)]
outs=[x.communicate()[0] for x in p]
import re
answered=sum(int(re.search(r"(\d+) succeeded",o).group(1))*(1 if i%2==0 else 150) for i,o in enumerate(outs))
time.sleep(2)  # old nodes' marks and sweeps
q=lambda sql: bench.psql(old.url, sql)
print("rows, min, max offset:", q('SELECT count(*), min("offset"), max("offset") FROM up_events'))
print("reserved, marked, topics.last_offset, topic_marks:", q("SELECT o.reserved, o.marked, t.last_offset, m.last_offset FROM topic_offsets o JOIN topics t USING (name) JOIN topic_marks m USING (name) WHERE name='up'"))
print("migrations:", q("SELECT max(version) FROM _sqlx_migrations"))
print("answered events (2xx, includes errors):", answered)
for n in (old,new):
    print(n.label, "errors in log:", sum(1 for l in open(os.path.join(wd,"node-%s.log"%n.label)) if "ERROR" in l or "WARN" in l))
new.proc.terminate(); new.proc.wait(); new.log.close()
old.stop(admin)
