module github.com/allowancehq/allowance

go 1.26
