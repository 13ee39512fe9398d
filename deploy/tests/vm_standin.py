"""Stand-in ExecStart for deploy/tests/vm-unit-check.sh: runs caps_probe.py
inside the real unit sandbox, reports identity, oom_score_adj and the state
directory, then speaks the sd_notify protocol (READY=1, WATCHDOG=1 every 5 s)
as the agent will."""
import os, socket, subprocess, time
pid = next(p for p in os.listdir('/proc') if p.isdigit() and open(f'/proc/{p}/comm').read().strip() == 'sleep')
out = subprocess.run(['/usr/bin/python3', '/usr/local/lib/caps_probe.py', pid], capture_output=True, text=True)
print('PROBE', out.stdout.strip(), out.stderr.strip()[-300:], flush=True)
st = open('/proc/self/status').read()
print('ID uid=%d CapEff=%s CapAmb=%s' % (os.getuid(), st.split('CapEff:')[1].split()[0], st.split('CapAmb:')[1].split()[0]), flush=True)
print('OOMADJ', open('/proc/self/oom_score_adj').read().strip(), flush=True)
try:
    open('/var/lib/t3pressure/events.jsonl', 'a').write('{"probe":1}\n'); print('STATEDIR ok', flush=True)
except OSError as e:
    print('STATEDIR', e, flush=True)
def notify(msg):
    addr = os.environ.get('NOTIFY_SOCKET')
    if not addr:
        print('NO NOTIFY_SOCKET', flush=True); return
    if addr[0] == '@': addr = '\0' + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(msg.encode(), addr); s.close()
print('WATCHDOG_USEC', os.environ.get('WATCHDOG_USEC'), flush=True)
notify('READY=1')
while True:
    notify('WATCHDOG=1'); time.sleep(5)
