"""SIP stack: sans-I/O messages, transactions and dialogs; asyncio transports; the SIPREC handler."""
