"""twistd plugin: ``twistd -n pxed [options]``."""

from __future__ import annotations

import sys

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Run the pxed provisioning server. Settings: defaults <- --config file <- options."
    optParameters = [
        ["config", "c", None, "TOML configuration file"],
        ["port", "p", None, "Twisted endpoint to listen on [default: tcp:4848]"],
        ["data-dir", "d", None, "directory for the database and images [default: ./var]"],
        ["database", None, None, "SQLAlchemy URL [default: SQLite file in the data dir]"],
        ["base-url", None, None, "public URL machines reach pxed at, used in boot configs"],
        ["boot-policy", None, None, "on-demand (default) or always"],
        ["static-dir", None, None, "directory served at /static/ [default: DATA_DIR/static]"],
    ]
    optFlags = [
        ["no-migrate", None, "refuse to upgrade an older database schema"],
    ]


@implementer(IServiceMaker, IPlugin)
class PxedServiceMaker:
    tapname = "pxed"
    description = "Bare-metal provisioning control server"
    options = Options

    def makeService(self, options: Options):
        from pxed import config as pxed_config
        from pxed import service

        # Each option is the setting of the same name (--data-dir: data_dir);
        # an option not given is None and leaves the file's value alone.
        overrides = {
            name.replace("-", "_"): options[name]
            for name, *_ in Options.optParameters
            if name != "config"
        }
        overrides["migrate"] = False if options["no-migrate"] else None
        try:
            cfg = pxed_config.load(options["config"], overrides)
            return service.makeService(cfg)
        except (pxed_config.ConfigError, service.StartupError) as e:
            # One line, no traceback; twistd exits with status 1.
            sys.exit(f"pxed: error: {e}")


serviceMaker = PxedServiceMaker()
