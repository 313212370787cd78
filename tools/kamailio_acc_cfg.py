#!/usr/bin/env python3
"""Kamailio with accounting, for a like-for-like benchmark against kampx's built-in script.

kampx's built-in script accounts every call (acc rows for the INVITE and the BYE, missed
calls, a tracked dialog and its CDR, all written to the database). The team harness's
Kamailio config (bench/kamailio/kamailio.cfg) does none of that, so its call scenarios
compare kampx-with-accounting to Kamailio-without. This tool writes that same config with
Kamailio's acc and dialog modules doing what kampx does, into the same kind of database:

  - dialog: dlg_manage() on every initial INVITE that is relayed (memory only, db_mode 0);
  - acc: db_flag 1 and db_missed_flag 2 on those INVITEs, db_flag and
    failed_transaction_flag 3 on in-dialog BYEs, db_extra with kampx's party columns
    ($fU $fd $si $tU $rU $rd), CDRs into acc_cdrs (cdr_enable, cdr_on_failed);
  - the records into db_flatstore (Kamailio's append-only text files for accounting: one
    file per table and process, no locking). Why not SQLite as kampx: Kamailio's workers
    each insert every row in a transaction of their own, and db_sqlite sets no busy
    timeout, so two workers lose most rows to "database is locked" (tried: 2 900 of 16 000
    acc rows kept at 800 calls/s, WAL or not; db_insert_mode 2 is not supported by
    db_sqlite). db_flatstore keeps every row and is the cheapest way Kamailio has to keep
    them: a fair lower bound of what accounting costs Kamailio.

After a run, `wc -l OUT/flat/*` counts the rows (two acc lines and one acc_cdrs line per
answered call).

    python3 tools/kamailio_acc_cfg.py --bench ../shared/bench --out /tmp/kacc
    python3 ../shared/bench/bench.py --target kamailio --target kampx \\
        --kamailio-cfg /tmp/kacc/kamailio-acc.cfg --scenario call-carrier-in ...

The derived config is checked line by line: if the harness's config no longer has the
lines this tool edits, it stops with the line it did not find.
"""

from __future__ import annotations

import argparse
import os
import sys

PARTIES = "src_user=$fU;src_domain=$fd;src_ip=$si;dst_ouser=$tU;dst_user=$rU;dst_domain=$rd"
MODULES = f"""loadmodule "db_flatstore.so"
loadmodule "dialog.so"
loadmodule "acc.so"

# ----- dialog and acc: what kampx's built-in script does for every call -----
modparam("dialog", "db_mode", 0)
modparam("acc", "db_url", ACC_DBURL)
modparam("acc", "db_flag", 1)
modparam("acc", "db_missed_flag", 2)
modparam("acc", "failed_transaction_flag", 3)
modparam("acc", "db_extra", "{PARTIES}")
modparam("acc", "cdr_enable", 1)
modparam("acc", "cdr_on_failed", 1)
modparam("acc", "cdr_log_enable", 0)
modparam("acc", "cdrs_table", "acc_cdrs")
modparam("acc", "cdr_extra", "{PARTIES};callid=$ci")
"""

ACCOUNT = "\tsetflag(1); setflag(2); dlg_manage();\n"

# (the line as in the harness's config, what goes right after it)
EDITS = [
    ('loadmodule "permissions.so"\n', "\n" + MODULES),
    ("\tif (loose_route()) {\n", '\t\tif (is_method("BYE")) { setflag(1); setflag(3); }\n'),
    ("route[FROMCARRIER] {\n", None),  # checked only: the ACCOUNT line goes before record_route
    ("\tconsume_credentials();\n\trecord_route();\n", None),
]


def derive(cfg: str, flat_dir: str) -> str:
    for line, _ in EDITS:
        if line not in cfg:
            raise SystemExit(f"the harness's config has no line {line.strip()!r}: update this tool")
    out = cfg.replace(EDITS[0][0], EDITS[0][0] + EDITS[0][1], 1)
    out = out.replace(EDITS[1][0], EDITS[1][0] + EDITS[1][1], 1)
    # the carrier's INVITE: accounted once lookup() found the user, before record_route()
    head, sep, tail = out.partition("route[FROMCARRIER] {\n")
    tail = tail.replace("\trecord_route();\n", ACCOUNT + "\trecord_route();\n", 1)
    out = head + sep + tail
    # a user's INVITE: accounted once authenticated
    out = out.replace(EDITS[3][0], "\tconsume_credentials();\n" + ACCOUNT + "\trecord_route();\n")
    define = f'#!ifndef ACC_DBURL\n#!define ACC_DBURL "flatstore:{flat_dir}"\n#!endif\n\n'
    marker = "####### Global Parameters #########\n"
    return out.replace(marker, define + marker, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", required=True, help="the harness's folder (bench.py, kamailio/)")
    ap.add_argument("--out", required=True, help="where the config and the records go")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    flat_dir = os.path.abspath(os.path.join(args.out, "flat"))
    os.makedirs(flat_dir, exist_ok=True)
    for name in os.listdir(flat_dir):  # the rows of an earlier run
        os.unlink(os.path.join(flat_dir, name))
    with open(os.path.join(args.bench, "kamailio", "kamailio.cfg"), encoding="utf-8") as f:
        cfg = derive(f.read(), flat_dir)
    path = os.path.join(args.out, "kamailio-acc.cfg")
    with open(path, "w", encoding="utf-8") as f:
        f.write(cfg)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
