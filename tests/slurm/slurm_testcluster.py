"""A private single-node Slurm cluster on this machine, for tests (the fixture that starts one
per session: ``tests/slurm/conftest.py``, whose docstring says how to use it).

The cluster is private to the session: its own folder in /tmp (config, munge key and socket,
state, spool, logs and pid files), its own free SlurmctldPort/SlurmdPort and cluster name, so
two sessions (two developers, CI beside a developer) run side by side. It needs root (munged
runs as the ``munge`` user, slurmd as root); Debian's ``slurmctld slurmd slurm-client munge``
are installed with apt-get when missing. Where the cluster cannot come up the tests are
skipped with the reason. At the end it cancels its jobs and stops the daemons it started, by
their pids; the folder is removed unless a test failed (its path is then printed).

Knobs that make the cluster quick for tests (slurm.conf(5), Slurm 22.05): ``cred_expire=5``
in AuthInfo (a requeued job waits this long before it may start again; default 120 s),
``SchedulerParameters=sched_interval=1`` (the main scheduling loop, which starts a requeued job
once it is eligible, runs every second; default 60 s), ``KillWait=5`` (SIGTERM to SIGKILL at a
time limit or cancel; default 30 s).
"""
from __future__ import annotations

import getpass
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from support import free_port

#: each program the cluster needs, and the Debian package that brings it.
PACKAGES = {'slurmctld': 'slurmctld', 'slurmd': 'slurmd', 'sbatch': 'slurm-client',
            'munged': 'munge'}
#: job states after which a job does not change again by itself.
FINAL_STATES = {'COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'PREEMPTED',
                'OUT_OF_MEMORY', 'BOOT_FAIL', 'DEADLINE'}
PARTITION = 'debug'


class ClusterUnavailable(Exception):
    """The cluster cannot be brought up on this machine (the message says why)."""


@dataclass
class SlurmCluster:
    """A running single-node cluster: how to reach it and what it started."""
    folder: Path
    env: Dict[str, str]
    partition: str
    cpus: int
    log_dir: Path
    procs: Dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def pids(self) -> Dict[str, int]:
        """The pid of each daemon this cluster started (munged, slurmctld, slurmd)."""
        return {name: proc.pid for name, proc in self.procs.items()}

    def run(self, args: List[str], check: bool = True, timeout: float = 60,
            env: Optional[Dict[str, str]] = None, **kwargs) -> subprocess.CompletedProcess:
        """Run a Slurm client (``['squeue', ...]``) on this cluster, with ``env`` added to
        :attr:`env` (sbatch and srun pass it on to the job); its output as text."""
        out = subprocess.run(args, env={**self.env, **(env or {})}, capture_output=True,
                             text=True, timeout=timeout, **kwargs)
        if check and out.returncode != 0:
            raise AssertionError(f'{" ".join(args)} failed ({out.returncode}): {out.stderr}')
        return out

    def submit(self, sbatch_args: List[str], **kwargs) -> str:
        """``sbatch --parsable SBATCH_ARGS`` (``kwargs``: those of :meth:`run`): the job id."""
        return self.run(['sbatch', '--parsable', *sbatch_args], **kwargs).stdout.strip()

    def job(self, job_id: str) -> Dict[str, str]:
        """``scontrol show job -o JOB_ID`` as {field: value}, e.g. JobState, Restarts."""
        line = self.run(['scontrol', 'show', 'job', '-o', job_id]).stdout
        return parse_fields(line)

    def wait_for_state(self, job_id: str, states: Iterable[str], timeout: float,
                       poll: float = 0.5) -> Dict[str, str]:
        """Wait until the job's JobState is one of ``states``; its fields. Fails at once when
        it reaches another final state, and after ``timeout`` seconds, with the daemons'
        log tails."""
        wanted, deadline = set(states), time.time() + timeout
        while True:
            info = self.job(job_id)
            state = info.get('JobState')
            if state in wanted:
                return info
            if state in FINAL_STATES or time.time() > deadline:
                raise AssertionError(f'job {job_id} is {state}, expected one of '
                                     f'{sorted(wanted)}: {info}\n{self.log_tails()}')
            time.sleep(poll)

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of the daemons' logs, for failure messages."""
        parts = []
        for name in ('slurmctld.log', 'slurmd.log'):
            path = self.log_dir / name
            text = path.read_text(errors='replace').splitlines() if path.exists() else []
            parts.append(f'--- {path} ---\n' + '\n'.join(text[-lines:]))
        return '\n'.join(parts)


def parse_fields(line: str) -> Dict[str, str]:
    """``Key=value Key2=value2`` (scontrol's one-line output) as a dict; values without
    spaces, as scontrol prints the fields tests read."""
    return dict(word.split('=', 1) for word in line.split() if '=' in word)


def ensure_packages() -> Dict[str, str]:
    """The path of each program of :data:`PACKAGES`, installing missing packages with apt-get
    (root only)."""
    missing = sorted({pkg for prog, pkg in PACKAGES.items() if not which(prog)})
    if missing:
        if os.geteuid() != 0:
            raise ClusterUnavailable(f'Slurm packages missing ({" ".join(missing)}); install '
                                     'them as root: apt-get install ' + ' '.join(missing))
        env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
        out = subprocess.run(['apt-get', 'install', '-y', '--no-install-recommends', *missing],
                             env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise ClusterUnavailable(f'apt-get install {" ".join(missing)} failed: '
                                     f'{out.stderr.strip()[-500:]}')
    paths = {prog: which(prog) for prog in PACKAGES}
    lost = [prog for prog, path in paths.items() if path is None]
    if lost:
        raise ClusterUnavailable(f'{", ".join(lost)} not found after installing Slurm')
    return paths


def which(program: str) -> Optional[str]:
    """``program`` on PATH or in /usr/sbin (daemons live there, often outside a user's PATH)."""
    return shutil.which(program) or shutil.which(program, path='/usr/sbin:/sbin')


def node_line(slurmd: str) -> str:
    """This machine's NodeName line as ``slurmd -C`` measures it (CPUs, sockets, memory)."""
    out = subprocess.run([slurmd, '-C'], capture_output=True, text=True, timeout=30)
    line = out.stdout.splitlines()[0] if out.returncode == 0 and out.stdout else ''
    if not line.startswith('NodeName='):
        raise ClusterUnavailable(f'slurmd -C failed: {out.stderr.strip()}')
    return line


def slurm_conf(folder: Path, host: str, node: str, ports: Dict[str, int]) -> str:
    """The private slurm.conf: everything in ``folder``, one node, one partition."""
    return '\n'.join([
        f'ClusterName=t{ports["ctld"]}',
        f'SlurmctldHost={host}',
        f'SlurmctldPort={ports["ctld"]}',
        f'SlurmdPort={ports["slurmd"]}',
        'SlurmUser=root',
        'AuthType=auth/munge',
        'CredType=cred/munge',
        f'AuthInfo=socket={folder}/run/munge.socket,cred_expire=5',
        'ProctrackType=proctrack/linuxproc',
        'TaskPlugin=task/none',
        'SelectType=select/cons_tres',
        'SelectTypeParameters=CR_Core',
        'SchedulerType=sched/builtin',
        'SchedulerParameters=sched_interval=1',
        'ReturnToService=2',
        'JobRequeue=1',
        'KillWait=5',
        'MpiDefault=none',
        'MailProg=/bin/true',
        'JobCompType=jobcomp/none',
        'AccountingStorageType=accounting_storage/none',
        f'PlugStackConfig={folder}/plugstack.conf',
        f'StateSaveLocation={folder}/state',
        f'SlurmdSpoolDir={folder}/spool',
        f'SlurmctldPidFile={folder}/run/slurmctld.pid',
        f'SlurmdPidFile={folder}/run/slurmd.pid',
        f'SlurmctldLogFile={folder}/log/slurmctld.log',
        f'SlurmdLogFile={folder}/log/slurmd.log',
        f'{node} State=UNKNOWN',
        f'PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP',
    ]) + '\n'


def start_munge(folder: Path, munged: str) -> subprocess.Popen:
    """munged as the ``munge`` user on a fresh random key and a private socket."""
    user = pwd.getpwnam('munge')
    keys, run = folder / 'munge', folder / 'run'
    keys.mkdir(mode=0o700)
    key = keys / 'munge.key'
    key.write_bytes(os.urandom(1024))
    for path, mode in ((keys, 0o700), (key, 0o400), (run, 0o755)):
        os.chown(path, user.pw_uid, user.pw_gid)
        path.chmod(mode)
    with open(folder / 'log' / 'munged.log', 'w') as log:   # --foreground: logs to stderr
        return subprocess.Popen(
            [munged, '--foreground', f'--socket={run}/munge.socket', f'--key-file={key}',
             f'--pid-file={run}/munged.pid', f'--seed-file={keys}/munged.seed'],
            user=user.pw_uid, group=user.pw_gid, extra_groups=[], stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)


def wait_until(check, timeout: float, what: str, procs: Dict[str, subprocess.Popen],
               folder: Path) -> None:
    """Poll ``check()`` until true; ClusterUnavailable (with the log's end) when a daemon
    exits or ``timeout`` seconds pass."""
    deadline = time.time() + timeout
    while not check():
        dead = [name for name, proc in procs.items() if proc.poll() is not None]
        if dead or time.time() > deadline:
            logs = [p for p in sorted((folder / 'log').iterdir()) if p.stat().st_size]
            tail = '; '.join(f'{p.name}: ' + ' | '.join(p.read_text(errors='replace')
                                                         .splitlines()[-3:]) for p in logs)
            cause = f'{", ".join(dead)} exited' if dead else f'not after {timeout:.0f} s'
            raise ClusterUnavailable(f'{what}: {cause} ({tail})')
        time.sleep(0.2)


def new_folder() -> Path:
    """A fresh folder for one cluster in the system's temp folder, which the munge user can
    reach (pytest's own temp folders are private to their user)."""
    folder = Path(tempfile.mkdtemp(prefix='mixedae-slurm-'))
    folder.chmod(0o755)
    return folder


def start_cluster(folder: Path) -> SlurmCluster:
    """Bring up munged, slurmctld and slurmd on a private configuration in ``folder`` and
    wait until the node is idle. Stop it with :func:`stop_cluster`."""
    if os.geteuid() != 0:
        raise ClusterUnavailable(f'a test cluster runs slurmd and munged, which needs root '
                                 f'(running as {getpass.getuser()}); run make test-slurm as root')
    try:
        pwd.getpwnam('munge')
    except KeyError:
        raise ClusterUnavailable('no munge user (the munge package creates it)') from None
    paths = ensure_packages()
    for sub in ('state', 'spool', 'log', 'run'):
        (folder / sub).mkdir(parents=True)
    (folder / 'plugstack.conf').write_text('')
    host = socket.gethostname().split('.')[0]
    ports = {'ctld': free_port(), 'slurmd': free_port()}
    conf = folder / 'slurm.conf'
    node = node_line(paths['slurmd'])
    conf.write_text(slurm_conf(folder, host, node, ports))
    env = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_')}
    env.update(SLURM_CONF=str(conf),
               PATH=os.pathsep.join([os.path.dirname(paths['sbatch']), env['PATH']]))
    cluster = SlurmCluster(folder=folder, env=env, partition=PARTITION,
                           cpus=int(parse_fields(node)['CPUs']), log_dir=folder / 'log')
    procs = cluster.procs
    procs['munged'] = start_munge(folder, paths['munged'])
    try:
        socket_path = folder / 'run' / 'munge.socket'
        wait_until(socket_path.exists, 10, 'munged did not open its socket', procs, folder)
        for daemon in ('slurmctld', 'slurmd'):   # -D: in the foreground, so the pid is theirs
            with open(folder / 'log' / f'{daemon}.out', 'w') as log:
                procs[daemon] = subprocess.Popen(
                    [paths[daemon], '-D', '-f', str(conf)], env=env, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True)

        def node_idle() -> bool:
            out = cluster.run(['sinfo', '-h', '-N', '-o', '%T'], check=False, timeout=20)
            return out.returncode == 0 and out.stdout.split() == ['idle']
        wait_until(node_idle, 60, 'the node did not become idle', procs, folder)
    except BaseException:
        stop_daemons(procs)
        raise
    return cluster


def stop_daemons(procs: Dict[str, subprocess.Popen]) -> None:
    """SIGTERM each daemon we started, by its pid (slurmd, slurmctld, then munged); SIGKILL
    one still running after 20 s."""
    for name in ('slurmd', 'slurmctld', 'munged'):
        proc = procs.get(name)
        if proc is None or proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_cluster(cluster: SlurmCluster) -> None:
    """Cancel the cluster's jobs, wait for them to end, then stop its daemons."""
    jobs = cluster.run(['squeue', '-h', '-o', '%i'], check=False).stdout.split()
    if jobs:
        cluster.run(['scancel', *jobs], check=False)
        deadline = time.time() + 30
        while time.time() < deadline and cluster.run(['squeue', '-h', '-o', '%i'],
                                                     check=False).stdout.split():
            time.sleep(0.5)
    stop_daemons(cluster.procs)
