from capstone.cli import app

app(prog_name="capstone")
